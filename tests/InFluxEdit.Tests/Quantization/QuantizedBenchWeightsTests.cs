using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>The benchmark's weights made directly in a block format look like its float ones: mean 0, U(−a, a)'s spread.</summary>
public class QuantizedBenchWeightsTests
{
    [Theory]
    [InlineData(TensorFormat.Q8_0)]
    [InlineData(TensorFormat.Q4_0)]
    [InlineData(TensorFormat.Q4_1)]
    [InlineData(TensorFormat.Q5_1)]
    [InlineData(TensorFormat.Q2_K)]
    [InlineData(TensorFormat.Q3_K)]
    [InlineData(TensorFormat.Q4_K)]
    [InlineData(TensorFormat.Q5_K)]
    [InlineData(TensorFormat.Q6_K)]
    public void BlocksMadeDirectlyHaveTheFloatWeightsMeanAndSpread(TensorFormat format)
    {
        var parameter = new ParameterInfo("blocks.0.linear.weight", [48, 1024], DType.BF16);
        float[] values = TensorDecoder.Decode(format, RandomWeights.GenerateBlocks(parameter, format, seed: 3), 48 * 1024);
        float[] floats = RandomWeights.Generate(parameter, seed: 3).Data;
        double Rms(float[] v) => Math.Sqrt(v.Sum(x => (double)x * x) / v.Length);
        values.ShouldAllBe(v => float.IsFinite(v));
        Math.Abs(values.Average(v => (double)v)).ShouldBeLessThan(0.05 * Rms(floats));
        Rms(values).ShouldBe(Rms(floats), 0.05 * Rms(floats));
        RandomWeights.GenerateBlocks(parameter, format, seed: 3).ShouldBe(RandomWeights.GenerateBlocks(parameter, format, seed: 3), "the same seed gives the same blocks");
    }

    [Fact]
    public void ABenchModelHeldInQ4KHoldsItsMatricesQuantized()
    {
        var tiny = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny").Descriptor;
        using var backend = new CpuBackend();
        var weights = RandomWeights.Upload(tiny, backend, seed: 1, precision: new BasePrecision(TensorFormat.Q4_K));
        try
        {
            foreach (var parameter in tiny.Parameters)
            {
                var format = parameter.Unquantized ? null : QuantizationPlan.FormatFor(TensorFormat.Q4_K, parameter.Shape);
                if (format == null) weights[parameter.Name].ShouldBeOfType<CpuTensor>(parameter.Name);
                else weights[parameter.Name].ShouldBeOfType<CpuQuantizedTensor>(parameter.Name).Format.ShouldBe(format.Value);
            }
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }
}
