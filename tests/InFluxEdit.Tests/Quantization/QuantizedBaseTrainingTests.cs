using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Training;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// LoRA training over a base held quantized: the adapters and a float img_in beside it get exactly the gradients they
/// get over the same base decoded to float32 at load (the backward's dx = dy·W reads the blocks panel by panel).
/// </summary>
public class QuantizedBaseTrainingTests
{
    private static Dictionary<string, float[]> Gradients(BasePrecision precision)
    {
        using var backend = new CpuBackend();
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, [file], backend, precision: precision,
            keepFloat: name => name.StartsWith("img_in.", StringComparison.Ordinal));
        try
        {
            if (!precision.DecodeAtLoad)
            {
                weights.Values.OfType<CpuQuantizedTensor>().Count().ShouldBeGreaterThan(10);
                weights["img_in.weight"].ShouldBeOfType<CpuTensor>();
            }
            return TinyFluxTrainingStep.Run(backend, weights,
                [("double_blocks.0.img_attn.qkv", 192, 64), ("single_blocks.1.linear2", 64, 320), ("double_blocks.1.img_mlp.0", 256, 64)]).Gradients;
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    [Theory]
    [InlineData(TensorFormat.Q8_0)]
    [InlineData(TensorFormat.F8_E4M3)]
    [InlineData(TensorFormat.Q4_K)]
    public void AdapterAndImgInGradientsOverAQuantizedBaseEqualThoseOverItsDecodedWeights(TensorFormat format)
    {
        var kept = Gradients(new BasePrecision(format));
        var decoded = Gradients(new BasePrecision(format, DecodeAtLoad: true));
        kept.Keys.ShouldBe(decoded.Keys, ignoreOrder: true);
        foreach (var (name, values) in kept)
        {
            values.ShouldContain(v => v != 0f, $"{name} got no gradient");
            values.ShouldBe(decoded[name], name);
        }
    }
}
