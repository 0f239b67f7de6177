using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Quantization;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>Our quantizers write ggml's reference bytes where the format is deterministic, and every format round-trips within its precision.</summary>
public class QuantizerTests
{
    /// <summary>Gaussian rows at very different scales, plus the blocks quantizers get wrong: zeros, one spike, a negative extreme, ties.</summary>
    private static float[] Weights(int seed, int blocks)
    {
        var random = new Random(seed);
        var values = new float[blocks * 256];
        for (int b = 0; b < blocks; b++)
        {
            float scale = MathF.Pow(10, random.Next(-4, 3));
            for (int i = 0; i < 256; i++)
                values[b * 256 + i] = scale * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }
        Array.Clear(values, 0, 32);                       // an all-zero block
        values[40] = 5f;                                   // a block dominated by one value
        values[70] = -3f;                                  // the extreme is negative
        for (int i = 96; i < 128; i++) values[i] = i % 4 * 0.25f; // exact halves: ties in rounding
        return values;
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 4)]
    [InlineData(3, 9)]
    public void Q8_0BytesEqualGgmlsReferenceFormula(int seed, int blocks)
    {
        float[] x = Weights(seed, blocks);
        TensorEncoder.Encode(TensorFormat.Q8_0, x).ShouldBe(IndependentGgml.QuantizeQ8_0(x));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 4)]
    [InlineData(3, 9)]
    public void Q4_0BytesEqualGgmlsReferenceFormula(int seed, int blocks)
    {
        float[] x = Weights(seed, blocks);
        TensorEncoder.Encode(TensorFormat.Q4_0, x).ShouldBe(IndependentGgml.QuantizeQ4_0(x));
    }

    /// <summary>
    /// Relative L2 error of quantize → decode on Gaussian weights, against a bound from the format's step: uniform
    /// rounding with step Δ errs by Δ/√12 RMS, Δ = (largest of 32 Gaussians ≈ 2.5σ)/levels; the bounds have about 1.5×
    /// headroom. The measured figures are what a user trades for memory.
    /// </summary>
    [Theory]
    [InlineData(TensorFormat.Q8_0, 0.01)]
    [InlineData(TensorFormat.Q6_K, 0.03)]
    [InlineData(TensorFormat.Q5_1, 0.05)]
    [InlineData(TensorFormat.Q5_0, 0.06)]
    [InlineData(TensorFormat.Q4_K, 0.11)]
    [InlineData(TensorFormat.Q4_1, 0.11)]
    [InlineData(TensorFormat.Q4_0, 0.13)]
    [InlineData(TensorFormat.F8_E4M3, 0.04)]
    [InlineData(TensorFormat.F8_E5M2, 0.08)]
    [InlineData(TensorFormat.BF16, 0.004)]
    public void RoundTripStaysWithinTheFormatsPrecision(TensorFormat format, double bound)
    {
        var random = new Random(5);
        var x = new float[64 * 256];
        for (int i = 0; i < x.Length; i++)
            x[i] = 0.02f * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        byte[] encoded = TensorEncoder.Encode(format, x);
        encoded.Length.ShouldBe((int)format.ByteCount([64, 256])!.Value);
        float[] decoded = TensorDecoder.Decode(format, encoded, x.Length);
        double error = TensorComparison.RelativeL2(decoded, x);
        error.ShouldBeLessThan(bound, $"{format}: relative L2 {error:E2}");
        error.ShouldBeGreaterThan(0, $"{format} cannot be lossless on random floats");
    }

    [Theory]
    [InlineData(TensorFormat.Q4_K)]
    [InlineData(TensorFormat.Q6_K)]
    [InlineData(TensorFormat.Q5_1)]
    [InlineData(TensorFormat.Q8_0)]
    public void QuantizersHandleZerosSpikesAndTinyScales(TensorFormat format)
    {
        float[] x = Weights(11, 4);
        float[] decoded = TensorDecoder.Decode(format, TensorEncoder.Encode(format, x), x.Length);
        decoded.Take(32).ShouldAllBe(v => v == 0f, "an all-zero block decodes to zeros");
        decoded.ShouldAllBe(v => float.IsFinite(v));
        for (int b = 0; b < 4; b++)
        {
            var block = x.AsSpan(b * 256, 256);
            var back = decoded.AsSpan(b * 256, 256);
            TensorComparison.RelativeL2(back, block).ShouldBeLessThan(0.2, $"{format} block {b}");
        }
    }

    [Fact]
    public void FormatsWithoutAQuantizerSayWhichToUse()
    {
        TensorEncoder.CanEncode(TensorFormat.Q3_K).ShouldBeFalse();
        Should.Throw<NotSupportedException>(() => TensorEncoder.Encode(TensorFormat.Q3_K, new float[256])).Message.ShouldContain("q4_k");
    }

    [Fact]
    public void PlanQuantizesMatricesAndFallsBackWhereRowsAreNotWholeSuperBlocks()
    {
        QuantizationPlan.FormatFor(TensorFormat.Q4_K, [64, 512]).ShouldBe(TensorFormat.Q4_K);
        QuantizationPlan.FormatFor(TensorFormat.Q4_K, [64, 96]).ShouldBe(TensorFormat.Q5_0);
        QuantizationPlan.FormatFor(TensorFormat.Q6_K, [64, 96]).ShouldBe(TensorFormat.Q8_0);
        QuantizationPlan.FormatFor(TensorFormat.Q8_0, [64, 40]).ShouldBeNull();
        QuantizationPlan.FormatFor(TensorFormat.Q8_0, [256]).ShouldBeNull("biases and norms stay float");
        QuantizationPlan.FormatFor(TensorFormat.F8_E4M3, [3, 5]).ShouldBe(TensorFormat.F8_E4M3);
    }
}
