using System.Text.Json;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Parity;

/// <summary>
/// The LoRA training case: flow-matching loss, every adapter's and img_in's gradient through the generated
/// backward pass, then two AdamW steps with the settings the manifest states in prose ("lr=1e-3 betas=(0.9,0.999)
/// eps=1e-8 weight_decay=0.01"); the LoRA scale comes from its "lora" section.
/// </summary>
public sealed partial class ParityRunner
{
    private List<ParityRow> RunLoraGradients(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        if (_backend is not ITrainingBackend training)
            return new List<ParityRow>
            {
                new(goldenCase.Name, "*", double.NaN, double.NaN, ParityStatus.Skipped,
                    $"the {_backend.Name} backend has no training ops: run this case with --device cpu or --device cuda"),
            };
        var lora = goldenCase.Json.GetProperty("lora");
        float scale = (float)lora.GetProperty("scale").GetDouble();
        var alsoTrainable = lora.TryGetProperty("also_trainable", out var extra)
            ? extra.EnumerateArray().Select(e => e.GetString()!).ToList()
            : new List<string>();

        using var data = SafeTensorsFile.Open(_manifest.PathOf(goldenCase.Data!));
        var weightFiles = goldenCase.Weights.Select(w => SafeTensorsFile.Open(_manifest.PathOf(w))).ToList();
        var owned = new List<DeviceTensor>();
        DeviceTensor Owned(DeviceTensor t)
        {
            owned.Add(t);
            return t;
        }
        try
        {
            var match = ModelRecognizer.Recognize(weightFiles[0], _models.Select(m => m.Descriptor));
            var info = _models.First(m => m.Descriptor == match.Model);
            var weights = WeightLoader.Load(info.Descriptor.Parameters, weightFiles, _backend, ignored: info.Descriptor.Ignores);
            owned.AddRange(weights.Values);
            var model = info.Create(_backend, weights);

            // The trainable tensors, each with its gradient and AdamW moments, under the golden's names.
            var state = new TrainingState();
            var parameters = new List<(string Name, DeviceTensor Value, DeviceTensor Gradient)>();
            foreach (var entry in data.Tensors.Where(t => t.Name.StartsWith("lora.", StringComparison.Ordinal) && t.Name.EndsWith(".lora_A", StringComparison.Ordinal)))
            {
                string module = entry.Name["lora.".Length..^".lora_A".Length];
                var a = Owned(_backend.Upload(data.ReadFloat32(entry.Name)));
                var b = Owned(_backend.Upload(data.ReadFloat32($"lora.{module}.lora_B")));
                var adapter = new LoraAdapter(a, b, scale, Owned(Zeros(a.Shape)), Owned(Zeros(b.Shape)));
                state.Add(module, adapter);
                parameters.Add(($"{module}.lora_A", a, adapter.GradA));
                parameters.Add(($"{module}.lora_B", b, adapter.GradB));
            }
            foreach (string key in alsoTrainable)
            {
                var gradient = Owned(Zeros(weights[key].Shape));
                state.WeightGradients[key] = gradient;
                parameters.Add((key, weights[key], gradient));
            }
            model.Training = state;

            var x0 = data.ReadFloat32("x0");
            var noise = data.ReadFloat32("noise");
            var t = data.ReadFloat32("t");
            var imgCond = data.ReadFloat32("img_cond");
            var inputs = new Dictionary<string, DeviceTensor>
            {
                ["img"] = Owned(_backend.Upload(NoisyInput(x0, noise, t, imgCond))),
                ["timesteps"] = Owned(_backend.Upload(t)),
            };
            foreach (string name in new[] { "img_ids", "txt", "txt_ids", "y", "guidance" })
                inputs[name] = Owned(_backend.Upload(data.ReadFloat32(name)));
            var target = new HostTensor((int[])x0.Shape.Clone(), noise.Data.Zip(x0.Data, (n, x) => n - x).ToArray());

            float Pass()
            {
                foreach (var p in parameters) training.Scale(p.Gradient, 0f);
                float loss = float.NaN;
                model.ForwardBackward(inputs, output =>
                {
                    var prediction = _backend.Download(output, output.Shape);
                    var (value, gradient) = MeanSquaredError(prediction, target);
                    loss = value;
                    return _backend.Upload(gradient);
                });
                return loss;
            }

            computed["loss"] = Scalar(Pass());
            foreach (var p in parameters) computed["grad." + p.Name] = _backend.Download(p.Gradient, p.Gradient.Shape);

            var moments = parameters.Select(p => (M: Owned(Zeros(p.Value.Shape)), V: Owned(Zeros(p.Value.Shape)))).ToList();
            void Step(int step)
            {
                for (int i = 0; i < parameters.Count; i++)
                    training.AdamWStep(parameters[i].Value, parameters[i].Gradient, moments[i].M, moments[i].V, step,
                        lr: 1e-3f, beta1: 0.9f, beta2: 0.999f, eps: 1e-8f, weightDecay: 0.01f);
            }
            Step(1);
            computed["loss_after_step1"] = Scalar(Pass());
            Step(2);
            foreach (var p in parameters) computed["adamw2." + p.Name] = _backend.Download(p.Value, p.Value.Shape);

            var expected = data.Tensors.Where(e => e.Name.StartsWith("expected.", StringComparison.Ordinal)).Select(e => e.Name["expected.".Length..]);
            return Compare(goldenCase, data, expected, computed, new Dictionary<string, HostTensor>());
        }
        finally
        {
            foreach (var tensor in owned) tensor.Dispose();
            foreach (var f in weightFiles) f.Dispose();
        }
    }

    private DeviceTensor Zeros(int[] shape) => TensorTransfer.Zeros(_backend, shape);

    private static HostTensor Scalar(float value) => new(new[] { 1 }, new[] { value });

    /// <summary>The model input of flow matching: cat(x_t, img_cond) with x_t = (1 − t)·x0 + t·noise per sample.</summary>
    private static HostTensor NoisyInput(HostTensor x0, HostTensor noise, HostTensor t, HostTensor condition)
    {
        int batch = x0.Shape[0], tokens = x0.Shape[1], latent = x0.Shape[2], extra = condition.Shape[2];
        var input = new HostTensor(batch, tokens, latent + extra);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < tokens; i++)
            {
                int row = b * tokens + i;
                for (int c = 0; c < latent; c++)
                    input.Data[row * (latent + extra) + c] = (1 - t.Data[b]) * x0.Data[row * latent + c] + t.Data[b] * noise.Data[row * latent + c];
                Array.Copy(condition.Data, row * extra, input.Data, row * (latent + extra) + latent, extra);
            }
        return input;
    }

    /// <summary>mean((prediction − target)²) and its gradient 2(prediction − target)/N, in float64.</summary>
    private static (float Loss, HostTensor Gradient) MeanSquaredError(HostTensor prediction, HostTensor target)
    {
        double sum = 0;
        var gradient = new HostTensor((int[])prediction.Shape.Clone());
        int n = prediction.Data.Length;
        for (int i = 0; i < n; i++)
        {
            double d = (double)prediction.Data[i] - target.Data[i];
            sum += d * d;
            gradient.Data[i] = (float)(2 * d / n);
        }
        return ((float)(sum / n), gradient);
    }
}
