using InFluxEdit.Cli.Commands;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// The generated ForwardBackward over a batch of N examples against N calls of one example each: the parameter
/// gradients of a batch are the sum of the examples' (each example's loss gradient is its own slice of the output
/// gradient), so a batch and accumulation over the same examples train identically.
/// </summary>
public class BatchGradientTests
{
    [Fact]
    public void ABatchGivesTheSumOfItsExamplesGradients()
    {
        const int batch = 3;
        using var backend = new CpuBackend();
        var info = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, new[] { file }, backend);
        var model = info.Create(backend, weights);
        var targets = LoraTargets.Preset("diffusers", info.Descriptor);
        var parameters = LoraInit.Create(backend, targets, 4, LoraInitKind.Gaussian, new TrainingRandom(7));
        var random = new Random(5);
        HostTensor Random(int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5);
            return t;
        }
        // Random up-projections, so the down-projections' gradients are not zero.
        foreach (var up in parameters.Where(p => p.Name.EndsWith(LoraModule.UpSuffix, StringComparison.Ordinal)))
            TensorTransfer.Overwrite(backend, up.Value, Random(up.Value.Shape));
        var state = LoraInit.Attach(targets, parameters, scale: 0.5f);
        foreach (string key in new[] { "img_in.weight", "img_in.bias" })
        {
            var gradient = backend.Upload(new HostTensor(weights[key].Shape));
            state.WeightGradients[key] = gradient;
            parameters.Add(new TrainableParameter(key, weights[key], gradient));
        }
        model.Training = state;

        // Examples that differ in every input the model reads per example: latents, text, vec, σ and guidance.
        var inputs = BenchInputs.Create(info.Descriptor, batch, imageTokens: 12, textTokens: 5);
        for (int b = 0; b < batch; b++)
        {
            inputs["timesteps"].Data[b] = 0.2f + 0.3f * b;
            inputs["guidance"].Data[b] = 1f + 10f * b;
        }
        var outputGradient = Random([batch, 12, int.Parse(info.Descriptor.Params["out_channels"], System.Globalization.CultureInfo.InvariantCulture)]);

        Dictionary<string, double[]> Gradients(int first, int count)
        {
            foreach (var p in parameters) ((ITrainingBackend)backend).Zero(p.Gradient);
            var slice = inputs.ToDictionary(p => p.Key, p => backend.Upload(Slice(p.Value, first, count)));
            model.ForwardBackward(slice, _ => backend.Upload(Slice(outputGradient, first, count)));
            foreach (var t in slice.Values) t.Dispose();
            return parameters.ToDictionary(p => p.Name, p => backend.Download(p.Gradient, p.Gradient.Shape).Data.Select(v => (double)v).ToArray());
        }

        var batched = Gradients(0, batch);
        var summed = batched.ToDictionary(p => p.Key, p => new double[p.Value.Length]);
        for (int b = 0; b < batch; b++)
            foreach (var (name, gradient) in Gradients(b, 1))
                for (int i = 0; i < gradient.Length; i++) summed[name][i] += gradient[i];

        foreach (var (name, expected) in summed)
        {
            expected.ShouldContain(v => v != 0, $"{name}: an all-zero gradient would prove nothing");
            double scale = expected.Max(Math.Abs);
            var actual = batched[name];
            for (int i = 0; i < expected.Length; i++)
                actual[i].ShouldBe(expected[i], 1e-5 * scale, $"{name}[{i}]");
        }
        model.Training = null;
        foreach (var p in parameters)
        {
            p.Gradient.Dispose();
            if (!p.Name.StartsWith("img_in.", StringComparison.Ordinal)) p.Value.Dispose();
        }
        foreach (var w in weights.Values) w.Dispose();
    }

    /// <summary>Examples [first, first + count) of a tensor whose first axis is the batch.</summary>
    private static HostTensor Slice(HostTensor tensor, int first, int count)
    {
        int per = (int)(tensor.Length / tensor.Shape[0]);
        var shape = (int[])tensor.Shape.Clone();
        shape[0] = count;
        return new HostTensor(shape, tensor.Data.AsSpan(first * per, count * per).ToArray());
    }
}
