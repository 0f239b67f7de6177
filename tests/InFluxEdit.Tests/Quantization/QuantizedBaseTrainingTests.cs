using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
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
        var tensors = new List<DeviceTensor>(weights.Values);
        try
        {
            if (!precision.DecodeAtLoad)
            {
                weights.Values.OfType<CpuQuantizedTensor>().Count().ShouldBeGreaterThan(10);
                weights["img_in.weight"].ShouldBeOfType<CpuTensor>();
            }
            var model = new FluxFillTiny(backend, weights);
            using var data = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
            var inputs = model.InputNames.ToDictionary(n => n, n => backend.Upload(data.ReadFloat32(n)));
            tensors.AddRange(inputs.Values);
            var random = new Random(4);
            DeviceTensor Upload(HostTensor host)
            {
                var tensor = backend.Upload(host);
                tensors.Add(tensor);
                return tensor;
            }
            HostTensor Random(params int[] shape)
            {
                var t = new HostTensor(shape);
                for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5) * 0.5f;
                return t;
            }
            var state = new TrainingState();
            var gradients = new Dictionary<string, DeviceTensor>();
            foreach (var (module, rows, columns) in new[] { ("double_blocks.0.img_attn.qkv", 192, 64), ("single_blocks.1.linear2", 64, 320), ("double_blocks.1.img_mlp.0", 256, 64) })
            {
                var adapter = new LoraAdapter(Upload(Random(4, columns)), Upload(Random(rows, 4)), 2f,
                    Upload(new HostTensor(4, columns)), Upload(new HostTensor(rows, 4)));
                state.Add(module, adapter);
                gradients[module + ".A"] = adapter.GradA;
                gradients[module + ".B"] = adapter.GradB;
            }
            foreach (string key in new[] { "img_in.weight", "img_in.bias" })
                state.WeightGradients[key] = gradients[key] = Upload(new HostTensor(weights[key].Shape));
            model.Training = state;
            model.ForwardBackward(inputs, output => Upload(Random(output.Shape)));
            return gradients.ToDictionary(g => g.Key, g => backend.Download(g.Value, g.Value.Shape).Data);
        }
        finally
        {
            foreach (var t in tensors) t.Dispose();
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
