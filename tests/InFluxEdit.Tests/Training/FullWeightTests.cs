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
/// Full-parameter training: the generated training passes give every parameter of the tiny FLUX transformer and the
/// tiny VAE its gradient (against central differences of the model's own forward, on random inputs of sizes the golden
/// cases do not use), the VAE's encode and decode passes nest for reconstruction, a short reconstruction run learns,
/// and trained weights save under the checkpoint's keys and dtype.
/// </summary>
public class FullWeightTests
{
    /// <summary>A model built on writable copies of golden weights, with every weight trained.</summary>
    private sealed class Trained : IDisposable
    {
        public readonly CpuBackend Backend = new();
        public readonly CompiledModel Model;
        public readonly Dictionary<string, DeviceTensor> Weights;
        public readonly FullWeightTraining Training;

        public Trained(string modelName, string weightsFile)
        {
            var info = ModelCatalog.All.First(m => m.Descriptor.Name == modelName);
            using var file = SafeTensorsFile.Open(TestPaths.Golden(weightsFile));
            var loaded = WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, Backend);
            Weights = FullWeightTraining.WritableCopies(Backend, loaded);
            foreach (var w in loaded.Values) w.Dispose();
            Model = info.Create(Backend, Weights);
            Training = new FullWeightTraining(Model, Weights);
        }

        public DeviceTensor Upload(Random random, double scale, params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)((random.NextDouble() * 2 - 1) * scale);
            return Backend.Upload(t);
        }

        public void Dispose()
        {
            Training.Dispose();
            foreach (var w in Weights.Values) w.Dispose();
            Backend.Dispose();
        }
    }

    /// <summary>
    /// Central differences of <paramref name="loss"/> on a few random entries of each named parameter against the
    /// backward pass's gradient; at least one checked gradient must be large against the tolerance's floor, so the
    /// check cannot pass on gradients that are all near zero.
    /// </summary>
    private static void CheckParameters(Trained t, Func<double> loss, IEnumerable<string> names, int entriesEach, int seed)
    {
        var random = new Random(seed);
        double largest = 0;
        foreach (string name in names)
        {
            var parameter = t.Training.Parameters.Single(p => p.Name == name);
            var analytic = t.Backend.Download(parameter.Gradient, parameter.Gradient.Shape);
            var values = t.Backend.Download(parameter.Value, parameter.Value.Shape);
            for (int n = 0; n < entriesEach; n++)
            {
                int i = random.Next(values.Data.Length);
                // The forward runs in float32: a step of 1e-2 keeps rounding noise well below the change it measures.
                const float Step = 1e-2f;
                float original = values.Data[i];
                values.Data[i] = original + Step;
                TensorTransfer.Overwrite(t.Backend, parameter.Value, values);
                double plus = loss();
                values.Data[i] = original - Step;
                TensorTransfer.Overwrite(t.Backend, parameter.Value, values);
                double minus = loss();
                values.Data[i] = original;
                TensorTransfer.Overwrite(t.Backend, parameter.Value, values);
                double numeric = (plus - minus) / (2 * Step);
                largest = Math.Max(largest, Math.Abs(numeric));
                Math.Abs(analytic.Data[i] - numeric).ShouldBeLessThan(2e-3 + 2e-2 * Math.Abs(numeric),
                    $"{name}[{i}]: backward {analytic.Data[i]}, finite differences {numeric}");
            }
        }
        largest.ShouldBeGreaterThan(0.05);
    }

    private static double WeightedSum(CpuBackend backend, DeviceTensor output, HostTensor weights)
    {
        var host = backend.Download(output, output.Shape);
        double sum = 0;
        for (int i = 0; i < host.Data.Length; i++) sum += (double)host.Data[i] * weights.Data[i];
        return sum;
    }

    [Fact]
    public void EveryTransformerParameterKindMatchesFiniteDifferences()
    {
        using var t = new Trained("flux-fill-tiny", "flux-tiny.safetensors");
        var random = new Random(61);
        // One sample of 7 image and 5 text tokens (the golden case has others).
        const int Li = 7, Lt = 5;
        var ids = new HostTensor(1, Li, 3);
        for (int i = 0; i < Li; i++) { ids.Data[i * 3 + 1] = i / 3; ids.Data[i * 3 + 2] = i % 3; }
        var inputs = new Dictionary<string, DeviceTensor>
        {
            ["img"] = t.Upload(random, 1, 1, Li, 384),
            ["img_ids"] = t.Backend.Upload(ids),
            ["txt"] = t.Upload(random, 1, 1, Lt, 48),
            ["txt_ids"] = t.Backend.Upload(new HostTensor(1, Lt, 3)),
            ["timesteps"] = t.Backend.Upload(new HostTensor(new[] { 1 }, new[] { 0.6f })),
            ["y"] = t.Upload(random, 1, 1, 32),
            ["guidance"] = t.Backend.Upload(new HostTensor(new[] { 1 }, new[] { 3.5f })),
        };
        var w = new HostTensor(1, Li, 64);
        for (int i = 0; i < w.Data.Length; i++) w.Data[i] = (float)(random.NextDouble() - 0.5);

        t.Model.ForwardBackward(inputs, _ => t.Backend.Upload(w));
        double Loss()
        {
            using var output = t.Model.Run(inputs)["out"];
            return WeightedSum(t.Backend, output, w);
        }
        CheckParameters(t, Loss, new[]
        {
            "img_in.weight", "img_in.bias", "time_in.in_layer.weight", "time_in.out_layer.bias", "guidance_in.in_layer.weight",
            "guidance_in.out_layer.weight", "vector_in.in_layer.bias", "vector_in.out_layer.weight", "txt_in.weight", "txt_in.bias",
            "double_blocks.0.img_mod.lin.weight", "double_blocks.0.txt_mod.lin.bias", "double_blocks.0.img_attn.qkv.weight",
            "double_blocks.0.img_attn.norm.query_norm.scale", "double_blocks.1.img_attn.norm.key_norm.scale",
            "double_blocks.1.txt_attn.norm.query_norm.scale", "double_blocks.0.txt_attn.norm.key_norm.scale",
            "double_blocks.1.txt_mlp.2.bias", "double_blocks.1.img_attn.proj.weight",
            "single_blocks.0.linear1.weight", "single_blocks.1.linear2.bias", "single_blocks.0.modulation.lin.weight",
            "single_blocks.0.norm.query_norm.scale", "single_blocks.1.norm.key_norm.scale",
            "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias", "final_layer.linear.weight", "final_layer.linear.bias",
        }, entriesEach: 2, seed: 5);
        foreach (var tensor in inputs.Values) tensor.Dispose();
    }

    [Fact]
    public void TheParameterTableIsWhatTrains()
    {
        using var t = new Trained("flux-fill-tiny", "flux-tiny.safetensors");
        t.Training.Parameters.Select(p => p.Name).ShouldBe(FluxFillTiny.Descriptor.Parameters.Select(p => p.Name));
        t.Training.ParameterCount.ShouldBe(FluxFillTiny.Descriptor.Parameters.Sum(p => (long)p.Shape.Aggregate(1, (a, b) => a * b)));
    }

    [Fact]
    public void NestedVaePassesMatchFiniteDifferencesOfTheReconstruction()
    {
        using var t = new Trained("flux-vae-tiny", "vae-tiny.safetensors");
        var random = new Random(17);
        // Two 16×24 images (latents 2×3), not the golden case's size.
        using var image = t.Upload(random, 1, 2, 3, 16, 24);
        var w = new HostTensor(2, 3, 16, 24);
        for (int i = 0; i < w.Data.Length; i++) w.Data[i] = (float)(random.NextDouble() - 0.5);

        // The encoder's pass continues from the decoder's dLatent.
        t.Model.ForwardBackward("encode", new Dictionary<string, DeviceTensor> { ["image"] = image }, latent =>
        {
            var gradients = new Dictionary<string, DeviceTensor>();
            t.Model.ForwardBackward("decode", new Dictionary<string, DeviceTensor> { ["latent"] = latent }, _ => t.Backend.Upload(w), gradients);
            return gradients["latent"];
        });
        double Loss()
        {
            using var latent = t.Model.Run("encode", new Dictionary<string, DeviceTensor> { ["image"] = image })["latent"];
            using var output = t.Model.Run("decode", new Dictionary<string, DeviceTensor> { ["latent"] = latent })["image"];
            return WeightedSum(t.Backend, output, w);
        }
        CheckParameters(t, Loss, new[]
        {
            "encoder.conv_in.weight", "encoder.conv_in.bias", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.block.0.norm2.bias",
            "encoder.down.0.downsample.conv.weight", "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.attn_1.norm.weight",
            "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.k.bias", "encoder.mid.attn_1.v.weight", "encoder.mid.attn_1.proj_out.bias",
            "encoder.norm_out.weight", "encoder.conv_out.weight",
            "decoder.conv_in.weight", "decoder.mid.block_1.conv1.weight", "decoder.mid.attn_1.k.weight", "decoder.up.1.upsample.conv.weight",
            "decoder.up.3.block.0.norm2.bias", "decoder.up.2.block.1.conv2.bias", "decoder.norm_out.weight", "decoder.norm_out.bias",
            "decoder.conv_out.weight", "decoder.conv_out.bias",
        }, entriesEach: 2, seed: 23);
    }

    [Fact]
    public void TheLogVarianceHalfOfTheEncoderOutputGetsNoGradient()
    {
        // BFL's encode takes the posterior mean: the conv_out rows that make logvar do not reach the latent.
        using var t = new Trained("flux-vae-tiny", "vae-tiny.safetensors");
        using var image = t.Upload(new Random(3), 1, 1, 3, 16, 16);
        Reconstruction.ForwardBackward(t.Model, image);
        var gradient = t.Backend.Download(t.Training.State.WeightGradients["encoder.conv_out.weight"], new[] { 32, 64 * 9 });
        int half = 16 * 64 * 9;
        gradient.Data.Skip(half).ShouldAllBe(v => v == 0f);
        gradient.Data.Take(half).Any(v => v != 0f).ShouldBeTrue();
    }

    /// <summary>Smooth colour patterns, as an autoencoder sees in images: per channel sin(a·x + b·y + c).</summary>
    private static HostTensor Patterns(Random random, int batch, int height, int width)
    {
        var images = new HostTensor(batch, 3, height, width);
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < 3; c++)
            {
                double fx = random.NextDouble() * 0.6, fy = random.NextDouble() * 0.6, phase = random.NextDouble() * 6;
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++)
                        images.Data[((b * 3 + c) * height + y) * width + x] = (float)(0.8 * Math.Sin(fx * x + fy * y + phase));
            }
        return images;
    }

    [Fact]
    public void AShortReconstructionRunLearns()
    {
        using var t = new Trained("flux-vae-tiny", "vae-tiny.safetensors");
        using var images = t.Backend.Upload(Patterns(new Random(11), 2, 16, 16));
        double Evaluate()
        {
            using var latent = t.Model.Run("encode", new Dictionary<string, DeviceTensor> { ["image"] = images })["latent"];
            using var output = t.Model.Run("decode", new Dictionary<string, DeviceTensor> { ["latent"] = latent })["image"];
            return Reconstruction.MeanSquaredError(t.Backend.Download(output, output.Shape), t.Backend.Download(images, images.Shape)).Loss;
        }
        double before = Evaluate();
        var optimizer = new AdamW(t.Backend, weightDecay: 0);
        double first = double.NaN;
        for (int step = 0; step < 30; step++)
        {
            double loss = Reconstruction.ForwardBackward(t.Model, images);
            if (step == 0)
            {
                first = loss;
                loss.ShouldBe(before, 1e-5 * before);
            }
            t.Training.Step(optimizer, 4e-3, maxGradientNorm: 1.0);
        }
        double after = Evaluate();
        after.ShouldBeLessThan(0.4 * first, $"reconstruction MSE {first} → {after}");
    }

    [Fact]
    public void TrainedWeightsSaveUnderTheCheckpointKeysAndDType()
    {
        using var t = new Trained("flux-fill-tiny", "flux-tiny.safetensors");
        string directory = Directory.CreateTempSubdirectory("influx-full-").FullName;
        try
        {
            // A changed weight, to see it come back.
            var imgIn = t.Weights["img_in.bias"];
            var changed = t.Backend.Download(imgIn, imgIn.Shape);
            changed.Data[5] = 1.25f;
            TensorTransfer.Overwrite(t.Backend, imgIn, changed);
            string path = Path.Combine(directory, "model.safetensors");
            FullWeightTraining.SaveWeights(path, t.Backend, FluxFillTiny.Descriptor, t.Weights, new Dictionary<string, string> { ["step"] = "7" });

            using var file = SafeTensorsFile.Open(path);
            file.Tensors.Select(e => e.Name).OrderBy(n => n, StringComparer.Ordinal)
                .ShouldBe(FluxFillTiny.Descriptor.Parameters.Select(p => p.Name).OrderBy(n => n, StringComparer.Ordinal));
            foreach (var parameter in FluxFillTiny.Descriptor.Parameters)
            {
                var entry = file.Tensors.Single(e => e.Name == parameter.Name);
                entry.DType.ShouldBe(parameter.DType);
                entry.Shape.ShouldBe(parameter.Shape);
            }
            file.Metadata["step"].ShouldBe("7");
            file.ReadFloat32("img_in.bias").Data[5].ShouldBe(1.25f);
            var match = ModelRecognizer.Recognize(new[] { file }, null, ModelCatalog.All.Select(m => m.Descriptor));
            match.Model.Name.ShouldBe("flux-fill-tiny");

            // NaN is refused before anything is written.
            changed.Data[0] = float.NaN;
            TensorTransfer.Overwrite(t.Backend, imgIn, changed);
            string refused = Path.Combine(directory, "nan.safetensors");
            Should.Throw<NonFiniteCheckpointException>(() => FullWeightTraining.SaveWeights(refused, t.Backend, FluxFillTiny.Descriptor, t.Weights));
            File.Exists(refused).ShouldBeFalse();
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
