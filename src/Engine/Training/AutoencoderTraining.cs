using System.Diagnostics;
using System.Globalization;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Training;

/// <summary>One autoencoder training run of <see cref="AutoencoderTraining.Train"/> (the options of `influx-cli train-vae`).</summary>
public sealed record AutoencoderTrainRequest
{
    public string Model { get; init; } = "flux-vae-tiny";
    public string? Weights { get; init; }
    public string Images { get; init; } = "";
    public string Output { get; init; } = "";
    public int Size { get; init; } = 32;
    public int Batch { get; init; } = 4;
    public int Steps { get; init; } = 500;
    public double LearningRate { get; init; } = 1e-3;
    public double MaxGradNorm { get; init; } = 1.0;
    public long Seed { get; init; }
    public int CheckpointEvery { get; init; } = 100;
    public int LogEvery { get; init; } = 10;
    public string? Resume { get; init; }
}

/// <summary>Trains an autoencoder for reconstruction, every weight in full: MSE of decode(encode(x)) on a folder of images.</summary>
public static class AutoencoderTraining
{
    private const string Method = "reconstruction";

    /// <summary>Runs <paramref name="request"/> on <paramref name="backend"/> (a training backend); returns the trained weights' path.</summary>
    /// <param name="log">The run's settings, the loss every <see cref="AutoencoderTrainRequest.LogEvery"/> steps and what is written.</param>
    /// <param name="cancellation">Checked before every step: a cancelled run saves a checkpoint of the step reached and throws <see cref="TrainingStoppedException"/>.</param>
    public static string Train(AutoencoderTrainRequest request, IBackend backend, TextWriter? log = null, CancellationToken cancellation = default)
    {
        log ??= TextWriter.Null;
        var info = ModelCatalog.All.FirstOrDefault(m => m.Descriptor.Name == request.Model)
            ?? throw new ArgumentException($"no compiled model '{request.Model}' (see `influx-cli models`)");
        if (request.Batch < 1 || request.Steps < 1 || request.Size < 1) throw new ArgumentException("--batch, --steps and --size must be positive");
        var images = LoadImages(request.Images, request.Size);
        Runtime.IO.PathChecks.CreateFolder(request.Output, "--output");
        var random = new TrainingRandom(request.Seed);

        Dictionary<string, DeviceTensor> weights;
        if (request.Weights != null)
        {
            using var file = SafeTensorsFile.Open(request.Weights);
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
        if (request.Resume != null)
        {
            var checkpoint = TrainingCheckpoint.Load(request.Resume);
            var saved = checkpoint.Info;
            if (saved.Method != Method || saved.BaseModel != info.Descriptor.Name)
                throw new InvalidDataException($"{request.Resume} was saved by a {saved.Method} run of {saved.BaseModel}, not a {Method} run of {info.Descriptor.Name}");
            checkpoint.Restore(backend, training.Parameters, optimizer);
            step = saved.Step;
            random = TrainingRandom.RestoreState(saved.RandomState);
            order = TrainingCheckpointInfo.ParseOrder(saved.DataOrder);
            position = int.Parse(saved.Extra["position"], CultureInfo.InvariantCulture);
        }
        log.WriteLine($"{info.Descriptor.Name}: {training.ParameterCount:N0} weights trained, {images.Count} images of {request.Size}×{request.Size}, batch {request.Batch}" +
                                 (step > 0 ? $", resuming at step {step}" : ""));

        string checkpointPath = Path.Combine(request.Output, "checkpoint.safetensors");
        var clock = Stopwatch.StartNew();
        double recent = 0;
        int recentCount = 0;
        void SaveCheckpoint() =>
            TrainingCheckpoint.Save(checkpointPath, backend, training.Parameters, optimizer,
                new TrainingCheckpointInfo(step, request.Seed, random.SaveState(), TrainingCheckpointInfo.FormatOrder(order), Method, 0, 0,
                    Array.Empty<string>(), info.Descriptor.Name)
                {
                    Extra = new Dictionary<string, string> { ["position"] = position.ToString(CultureInfo.InvariantCulture) },
                });
        while (step < request.Steps)
        {
            if (cancellation.IsCancellationRequested)
            {
                SaveCheckpoint();
                throw new TrainingStoppedException(step, request.Steps, checkpointPath, cancellation);
            }
            var batch = new HostTensor(request.Batch, 3, request.Size, request.Size);
            int plane = 3 * request.Size * request.Size;
            for (int b = 0; b < request.Batch; b++)
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
            training.Step(optimizer, request.LearningRate, request.MaxGradNorm > 0 ? request.MaxGradNorm : null);
            step++;
            recent += loss;
            recentCount++;
            if (step % Math.Max(1, request.LogEvery) == 0 || step == request.Steps)
            {
                log.WriteLine($"step {step}/{request.Steps}  loss {recent / recentCount:F5}  {step / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F2} it/s");
                recent = 0;
                recentCount = 0;
            }
            if ((request.CheckpointEvery > 0 && step % request.CheckpointEvery == 0) || step == request.Steps) SaveCheckpoint();
        }
        string output = Path.Combine(request.Output, info.Descriptor.Name + ".safetensors");
        FullWeightTraining.SaveWeights(output, backend, info.Descriptor, weights,
            new Dictionary<string, string> { ["trained"] = $"{Method}, {step} steps" });
        log.WriteLine($"wrote {output}");
        foreach (var w in weights.Values) w.Dispose();
        return output;
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
