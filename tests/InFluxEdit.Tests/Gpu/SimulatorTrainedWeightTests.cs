using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// --train-img-in over a bf16 checkpoint on the GPU backend: the GPU keeps bf16 matrices as 16-bit words, which the
/// optimizer cannot update, so the weights trained in place are loaded as a float32 master copy beside the bf16 base.
/// </summary>
public sealed class SimulatorTrainedWeightTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(null)]
    [InlineData(TensorFormat.Q8_0)]
    public void WeightsTrainedInPlaceAreHeldInFloat32BesideABf16Base(TensorFormat? basePrecision)
    {
        var backend = fixture.Backend;
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-bf16.safetensors"));
        var weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, [file], backend,
            precision: basePrecision is { } format ? new BasePrecision(format) : null,
            keepFloat: name => name.StartsWith("img_in.", StringComparison.Ordinal));
        try
        {
            file.Tensors.Single(t => t.Name == "img_in.weight").DType.ShouldBe(DType.BF16);
            foreach (string key in new[] { "img_in.weight", "img_in.bias" })
            {
                weights[key].DType.ShouldBe(DType.F32, key);
                backend.Download(weights[key].AsView(), weights[key].Shape).Data.ShouldBe(file.ReadFloat32(key).Data, key);
            }
            if (basePrecision == null) weights["double_blocks.0.img_attn.qkv.weight"].DType.ShouldBe(DType.BF16);
        }
        finally
        {
            foreach (var weight in weights.Values) weight.Dispose();
        }
    }
}
