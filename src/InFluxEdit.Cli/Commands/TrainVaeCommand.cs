using System.Diagnostics;
using System.Globalization;
using CommandLine;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("train-vae", HelpText = "Train an autoencoder for reconstruction, every weight in full (mean squared error of decode(encode(x)) on a folder of images): from --weights or from a fresh PyTorch-style initialisation. Checkpoints every N steps (atomically, with the optimiser state for --resume); the trained weights under the checkpoint's own keys and dtype at the end.")]
public sealed class TrainVaeOptions : DeviceOptions
{
    [Option("model", Default = "flux-vae-tiny", HelpText = "A compiled autoencoder with trainable encode and decode entries (flux-vae-tiny, flux-vae).")]
    public string Model { get; set; } = "flux-vae-tiny";

    [Option("weights", HelpText = "Start from this checkpoint; without it the model starts from a seeded initialisation (--seed).")]
    public string? Weights { get; set; }

    [Option("images", Required = true, HelpText = "A folder of .png / .jpg / .jpeg / .webp images (centre-cropped to a square, resized to --size).")]
    public string Images { get; set; } = "";

    [Option("output", Required = true, HelpText = "The output folder: checkpoint.safetensors and MODEL.safetensors (the trained weights).")]
    public string Output { get; set; } = "";

    [Option("size", Default = 32, HelpText = "Training images are size×size pixels (a multiple of the model's downscale, 8 for the FLUX VAE).")]
    public int Size { get; set; } = 32;

    [Option("batch", Default = 4, HelpText = "Images per step.")]
    public int Batch { get; set; } = 4;

    [Option("steps", Default = 500, HelpText = "Optimizer steps.")]
    public int Steps { get; set; } = 500;

    [Option("lr", Default = 1e-3, HelpText = "AdamW learning rate.")]
    public double LearningRate { get; set; } = 1e-3;

    [Option("max-grad-norm", Default = 1.0, HelpText = "Clip the global gradient norm to this (0: no clipping).")]
    public double MaxGradNorm { get; set; } = 1.0;

    [Option("seed", Default = 0L, HelpText = "Seed of the initialisation and of the data order.")]
    public long Seed { get; set; }

    [Option("checkpoint-every", Default = 100, HelpText = "Write the checkpoint every N steps (0: only at the end).")]
    public int CheckpointEvery { get; set; } = 100;

    [Option("log-every", Default = 10, HelpText = "Print the loss every N steps.")]
    public int LogEvery { get; set; } = 10;

    [Option("resume", HelpText = "A checkpoint.safetensors of an earlier run of this command: continues from its step with its weights and optimiser state.")]
    public string? Resume { get; set; }
}

public static class TrainVaeCommand
{
    private const string Method = "reconstruction";

    public static int Run(TrainVaeOptions o)
    {
        var info = ModelCatalog.All.FirstOrDefault(m => m.Descriptor.Name == o.Model)
            ?? throw new ArgumentException($"no compiled model '{o.Model}' (see `influx-cli models`)");
        if (o.Batch < 1 || o.Steps < 1 || o.Size < 1) throw new ArgumentException("--batch, --steps and --size must be positive");
        var images = LoadImages(o.Images, o.Size);
        Runtime.IO.PathChecks.CreateFolder(o.Output, "--output");
        using var backend = o.CreateBackend(System.Console.Out);
        var random = new TrainingRandom(o.Seed);

        Dictionary<string, DeviceTensor> weights;
        if (o.Weights != null)
        {
            using var file = SafeTensorsFile.Open(o.Weights);
            var loaded = WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend);
            weights = FullWeightTraining.WritableCopies(backend, loaded);
            foreach (var w in loaded.Values) w.Dispose();
        }
        else weights = FullWeightTraining.Initialize(backend, info.Descriptor, random);

        var model = info.Create(backend, weights);
        using var training = new FullWeightTraining(model, weights);
        var optimizer = new AdamW((ITrainingBackend)backend, weightDecay: 0);
        int step = 0;
        int[] order = Shuffled(images.Count, random);
        int position = 0;
        if (o.Resume != null)
        {
            var checkpoint = TrainingCheckpoint.Load(o.Resume);
            var saved = checkpoint.Info;
            if (saved.Method != Method || saved.BaseModel != info.Descriptor.Name)
                throw new InvalidDataException($"{o.Resume} was saved by a {saved.Method} run of {saved.BaseModel}, not a {Method} run of {info.Descriptor.Name}");
            checkpoint.Restore(backend, training.Parameters, optimizer);
            step = saved.Step;
            random = TrainingRandom.RestoreState(saved.RandomState);
            order = TrainingCheckpointInfo.ParseOrder(saved.DataOrder);
            position = int.Parse(saved.Extra["position"], CultureInfo.InvariantCulture);
        }
        System.Console.WriteLine($"{info.Descriptor.Name}: {training.ParameterCount:N0} weights trained, {images.Count} images of {o.Size}×{o.Size}, batch {o.Batch}" +
                                 (step > 0 ? $", resuming at step {step}" : ""));

        string checkpointPath = Path.Combine(o.Output, "checkpoint.safetensors");
        var clock = Stopwatch.StartNew();
        double recent = 0;
        int recentCount = 0;
        while (step < o.Steps)
        {
            var batch = new HostTensor(o.Batch, 3, o.Size, o.Size);
            int plane = 3 * o.Size * o.Size;
            for (int b = 0; b < o.Batch; b++)
            {
                if (position == order.Length)
                {
                    order = Shuffled(images.Count, random);
                    position = 0;
                }
                Array.Copy(images[order[position++]].Data, 0, batch.Data, b * plane, plane);
            }
            double loss;
            using (var device = backend.Upload(batch)) loss = Reconstruction.ForwardBackward(model, device);
            if (!double.IsFinite(loss)) throw new InvalidOperationException($"the loss became {loss} at step {step + 1}; lower --lr");
            training.Step(optimizer, o.LearningRate, o.MaxGradNorm > 0 ? o.MaxGradNorm : null);
            step++;
            recent += loss;
            recentCount++;
            if (step % Math.Max(1, o.LogEvery) == 0 || step == o.Steps)
            {
                System.Console.WriteLine($"step {step}/{o.Steps}  loss {recent / recentCount:F5}  {step / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F2} it/s");
                recent = 0;
                recentCount = 0;
            }
            if ((o.CheckpointEvery > 0 && step % o.CheckpointEvery == 0) || step == o.Steps)
                TrainingCheckpoint.Save(checkpointPath, backend, training.Parameters, optimizer,
                    new TrainingCheckpointInfo(step, o.Seed, random.SaveState(), TrainingCheckpointInfo.FormatOrder(order), Method, 0, 0,
                        Array.Empty<string>(), info.Descriptor.Name)
                    {
                        Extra = new Dictionary<string, string> { ["position"] = position.ToString(CultureInfo.InvariantCulture) },
                    });
        }
        string output = Path.Combine(o.Output, info.Descriptor.Name + ".safetensors");
        FullWeightTraining.SaveWeights(output, backend, info.Descriptor, weights,
            new Dictionary<string, string> { ["trained"] = $"{Method}, {step} steps" });
        System.Console.WriteLine($"wrote {output}");
        foreach (var w in weights.Values) w.Dispose();
        return 0;
    }

    private static int[] Shuffled(int count, TrainingRandom random)
    {
        var order = Enumerable.Range(0, count).ToArray();
        for (int i = count - 1; i > 0; i--)
        {
            int j = random.NextInt(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>Every image of the folder, centre-cropped to a square and resized to size×size, as [1, 3, size, size] in [−1, 1].</summary>
    private static List<HostTensor> LoadImages(string folder, int size)
    {
        var files = Directory.EnumerateFiles(folder)
            .Where(f => new[] { ".png", ".jpg", ".jpeg", ".webp" }.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new DirectoryNotFoundException($"no images in {folder}");
        var images = new List<HostTensor>();
        foreach (string file in files)
        {
            var image = ImageFile.LoadRgb(file);
            int height = image.Shape[2], width = image.Shape[3], side = Math.Min(height, width);
            int top = (height - side) / 2, left = (width - side) / 2;
            var square = new HostTensor(1, 3, side, side);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < side; y++)
                    Array.Copy(image.Data, (c * height + top + y) * width + left, square.Data, (c * side + y) * side, side);
            images.Add(side == size ? square : Resample.Bicubic(square, size, size));
        }
        return images;
    }
}
