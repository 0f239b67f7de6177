using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// One training pass of the tiny FLUX on the golden forward's inputs, for tests that compare two ways of holding the
/// same weights: LoRA adapters on the given modules and img_in's gradients, a seeded random output gradient.
/// </summary>
internal static class TinyFluxTrainingStep
{
    /// <summary>The forward's output and every gradient (adapters' A and B, img_in's weight and bias), downloaded.</summary>
    /// <param name="inputs">The model's inputs; null: the golden forward's (batch 2, 24 + 7 tokens).</param>
    public static (float[] Output, Dictionary<string, float[]> Gradients) Run(IBackend backend, IReadOnlyDictionary<string, DeviceTensor> weights,
        IEnumerable<(string Module, int Rows, int Columns)> adapters, IReadOnlyDictionary<string, HostTensor>? inputs = null)
    {
        var tensors = new List<DeviceTensor>();
        try
        {
            var model = new FluxFillTiny(backend, weights);
            if (inputs is null)
            {
                using var data = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
                inputs = model.InputNames.ToDictionary(n => n, n => data.ReadFloat32(n));
            }
            var uploaded = inputs.ToDictionary(p => p.Key, p => backend.Upload(p.Value));
            tensors.AddRange(uploaded.Values);
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
            foreach (var (module, rows, columns) in adapters)
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
            float[]? output = null;
            model.ForwardBackward(uploaded, result =>
            {
                output = backend.Download(result, result.Shape).Data;
                return Upload(Random(result.Shape));
            });
            return (output!, gradients.ToDictionary(g => g.Key, g => backend.Download(g.Value, g.Value.Shape).Data));
        }
        finally
        {
            foreach (var t in tensors) t.Dispose();
        }
    }
}
