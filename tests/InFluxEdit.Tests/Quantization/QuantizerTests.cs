using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Quantization;
using System.Runtime.InteropServices;
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
    /// The K-quants' reference quantizers search for scales, so no short formula states their bytes: the fixture holds
    /// the bytes ggml's own quantize_row_*_K_ref wrote for its inputs (GgmlReference/make-kquant-fixture.sh compiles
    /// them from ggml-quants.c), over blocks with zero groups, a constant block, one-signed blocks, spikes, ties, values
    /// below ggml's zero threshold and exactly representable codes.
    /// </summary>
    [Theory]
    [InlineData(TensorFormat.Q2_K)]
    [InlineData(TensorFormat.Q3_K)]
    [InlineData(TensorFormat.Q4_K)]
    [InlineData(TensorFormat.Q5_K)]
    [InlineData(TensorFormat.Q6_K)]
    public void KQuantBytesEqualGgmlsOwnReferenceQuantizer(TensorFormat format)
    {
        var (inputs, bytesByFormat) = GgmlKQuantFixture.Value;
        byte[] ours = TensorEncoder.Encode(format, inputs);
        byte[] ggml = bytesByFormat[format];
        ours.Length.ShouldBe(ggml.Length);
        int blockBytes = format.BlockBytes();
        for (int b = 0; b < ours.Length / blockBytes; b++)
            ours.AsSpan(b * blockBytes, blockBytes).SequenceEqual(ggml.AsSpan(b * blockBytes, blockBytes)).ShouldBeTrue($"{format} block {b} differs from ggml's");
    }

    private static readonly Lazy<(float[] Inputs, Dictionary<TensorFormat, byte[]> Bytes)> GgmlKQuantFixture = new(() =>
    {
        byte[] file = File.ReadAllBytes(Path.Combine(TestPaths.RepoRoot, "tests", "InFluxEdit.Tests", "Quantization", "GgmlReference", "kquants.bin"));
        int blocks = BitConverter.ToInt32(file, 0);
        float[] inputs = MemoryMarshal.Cast<byte, float>(file.AsSpan(4, blocks * 1024)).ToArray();
        var bytes = new Dictionary<TensorFormat, byte[]>();
        int at = 4 + blocks * 1024;
        foreach (TensorFormat format in (TensorFormat[])[TensorFormat.Q2_K, TensorFormat.Q3_K, TensorFormat.Q4_K, TensorFormat.Q5_K, TensorFormat.Q6_K])
        {
            bytes[format] = file.AsSpan(at, blocks * format.BlockBytes()).ToArray();
            at += bytes[format].Length;
        }
        at.ShouldBe(file.Length, "the fixture holds exactly the five formats' bytes");
        return (inputs, bytes);
    });

    /// <summary>
    /// Relative L2 error of quantize → decode on Gaussian weights, against a bound from the format's step: uniform
    /// rounding with step Δ errs by Δ/√12 RMS, Δ = (largest of 32 Gaussians ≈ 2.5σ)/levels, or for the K-quants with a
    /// min (Q2_K, Q4_K, Q5_K) Δ = (a group's range: ≈ 3.5σ over 16, 4.1σ over 32)/levels and for Q3_K (largest of 16 ≈ 1.8σ)/4;
    /// the bounds have about 1.5× headroom. The measured figures are what a user trades for memory.
    /// </summary>
    [Theory]
    [InlineData(TensorFormat.Q8_0, 0.01)]
    [InlineData(TensorFormat.Q6_K, 0.03)]
    [InlineData(TensorFormat.Q5_K, 0.06)]
    [InlineData(TensorFormat.Q5_1, 0.05)]
    [InlineData(TensorFormat.Q5_0, 0.06)]
    [InlineData(TensorFormat.Q4_K, 0.11)]
    [InlineData(TensorFormat.Q4_1, 0.11)]
    [InlineData(TensorFormat.Q4_0, 0.13)]
    [InlineData(TensorFormat.Q3_K, 0.19)]
    [InlineData(TensorFormat.Q2_K, 0.5)]
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
    // Per-block bounds: 0.2 where a block's step is at most a sixteenth of its range; Q2_K's four levels get the
    // headroom of its Gaussian bound in RoundTripStaysWithinTheFormatsPrecision.
    [InlineData(TensorFormat.Q2_K, 0.5)]
    [InlineData(TensorFormat.Q3_K, 0.2)]
    [InlineData(TensorFormat.Q4_K, 0.2)]
    [InlineData(TensorFormat.Q5_K, 0.2)]
    [InlineData(TensorFormat.Q6_K, 0.2)]
    [InlineData(TensorFormat.Q5_1, 0.2)]
    [InlineData(TensorFormat.Q8_0, 0.2)]
    public void QuantizersHandleZerosSpikesAndTinyScales(TensorFormat format, double blockBound)
    {
        float[] x = Weights(11, 4);
        float[] decoded = TensorDecoder.Decode(format, TensorEncoder.Encode(format, x), x.Length);
        decoded.Take(32).ShouldAllBe(v => v == 0f, "an all-zero block decodes to zeros");
        decoded.ShouldAllBe(v => float.IsFinite(v));
        for (int b = 0; b < 4; b++)
        {
            var block = x.AsSpan(b * 256, 256);
            var back = decoded.AsSpan(b * 256, 256);
            TensorComparison.RelativeL2(back, block).ShouldBeLessThan(blockBound, $"{format} block {b}");
        }
    }

    [Fact]
    public void EveryFormatHasAQuantizer()
    {
        foreach (TensorFormat format in Enum.GetValues<TensorFormat>())
        {
            TensorEncoder.Encode(format, new float[format.BlockElements() * 2]).Length.ShouldBe(format.BlockBytes() * 2);
        }
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
