using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using InFluxEdit.Datasets;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Text;

namespace InFluxEdit.Training;

/// <summary>How <see cref="ToyBase.Pretrain"/> makes the toy base (the options of `influx-cli pretrain-toy`).</summary>
public sealed record ToyPretrainRequest
{
    public string Output { get; init; } = "models/toy";
    public string? Work { get; init; }
    public int Scenes { get; init; } = 2000;
    public int Size { get; init; } = 64;
    public int VaeSteps { get; init; } = 8000;
    public int VaeFullSizeSteps { get; init; } = 500;
    public int Steps { get; init; } = 200000;
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Steps of the last stage, on squares, 2:1 and 1:2 scenes (0: squares only, as the base before it).</summary>
    public int AspectSteps { get; init; } = 40000;
    public double AspectLearningRate { get; init; } = 3e-4;
    public long Seed { get; init; }
}

/// <summary>
/// The project's toy FLUX Fill base, made from nothing as a FLUX model folder: tokenizers, seeded frozen text encoders,
/// an autoencoder trained for reconstruction on procedural scenes, then the transformer trained in full as an inpainting model:
/// on square scenes, then on squares, 2:1 and 1:2 canvases together, so a concat diptych's canvas (and the positions past a
/// square's edge) is not new to it.
/// </summary>
public static class ToyBase
{
    public const string TransformerModel = "flux-fill-toy", AutoencoderModel = "flux-vae-toy", ClipModel = "clip-tiny", T5Model = "t5-tiny";
    public const string TransformerFile = "flux1-fill-toy.safetensors";
    public const double ToyGuidance = 30.0;
    /// <summary>T5 tokens per caption: the captions' six words and end token with room to spare; every token costs the transformer as much as an image token.</summary>
    public const int ToyT5Length = 16;

    /// <summary>The toy base folder models/toy, looked for from the working folder up, then from this program's folder up (the .NET tool ships it beside the program).</summary>
    public static string FindFolder()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "toy");
                if (File.Exists(Path.Combine(candidate, TransformerFile))) return candidate;
            }
        throw new DirectoryNotFoundException("the toy model folder models/toy was not found beside this program or above this folder: run from the repository, give --flux-dir, or make it with 'influx-cli pretrain-toy'");
    }

    /// <summary>
    /// Makes the toy base folder <see cref="ToyPretrainRequest.Output"/>, training on <paramref name="backend"/>; a stage
    /// whose file exists is kept, so a stopped run continues.
    /// </summary>
    /// <param name="log">Each stage, the latents' statistics and what is written.</param>
    /// <param name="progress">The transformer's training steps.</param>
    public static void Pretrain(ToyPretrainRequest options, IBackend backend, TextWriter log, IProgress<TrainProgress>? progress = null)
    {
        string output = options.Output, work = options.Work ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, "toy-work");
        Runtime.IO.PathChecks.CreateFolder(output, "--out");
        Directory.CreateDirectory(work);
        var clock = Stopwatch.StartNew();

        log.WriteLine("== tokenizers and text encoders (seeded, frozen)");
        ToyTokenizers.WriteClip(Path.Combine(output, "tokenizer"));
        ToyTokenizers.WriteSentencePiece(Path.Combine(output, "tokenizer_2", "spiece.model"), Datasets.ShapeScenes.Vocabulary);
        // The seeded initialisations are made on the CPU whatever the training device, so one seed gives one folder everywhere.
        using (var cpu = new CpuBackend())
        {
            WriteInitialised(cpu, ClipModel, Path.Combine(output, "text_encoder", "model.safetensors"), options.Seed);
            WriteInitialised(cpu, T5Model, Path.Combine(output, "text_encoder_2", "model.safetensors"), options.Seed + 1);
        }

        string scenes = DrawScenes(work, "scenes", options.Size, options, log);

        string autoencoder = Path.Combine(output, FluxModelFolder.AutoencoderFile);
        if (!File.Exists(autoencoder))
        {
            // Half size first, where a step costs a quarter: the same scenes (the same seed, geometry relative to the
            // side) drawn at half the side; then a short run at full size teaches the larger flat areas and gentler edges.
            int half = options.Size / 2;
            string halfScenes = DrawScenes(work, $"scenes-{half}", half, options, log);
            string halfRun = TrainAutoencoder(Path.Combine(work, "vae"), Path.Combine(halfScenes, "images"), half, options.VaeSteps, 2e-3, null, options, backend, log);
            string fullRun = TrainAutoencoder(Path.Combine(work, "vae-full-size"), Path.Combine(scenes, "images"), options.Size, options.VaeFullSizeSteps, 1e-3,
                halfRun, options, backend, log);
            File.Copy(fullRun, autoencoder, overwrite: true);
        }
        var latents = LatentStatistics(autoencoder, Path.Combine(scenes, "images"), log);

        string transformer = Path.Combine(output, TransformerFile);
        if (!File.Exists(transformer))
        {
            string initial = Path.Combine(work, "flux-fill-toy-init.safetensors");
            using (var cpu = new CpuBackend())
                WriteInitialised(cpu, TransformerModel, initial, options.Seed + 2);
            log.WriteLine($"== transformer: {options.Steps} inpainting steps on {options.Size}×{options.Size} scenes, every weight");
            string trained = TrainTransformer(Path.Combine(work, "transformer"), initial, scenes, options.Size, options.Steps, options.LearningRate,
                options, autoencoder, backend, log, progress);
            if (options.AspectSteps > 0)
            {
                int wide = 2 * options.Size;
                log.WriteLine($"== transformer: {options.AspectSteps} inpainting steps on {options.Size}×{options.Size}, {wide}×{options.Size} and {options.Size}×{wide} scenes");
                string mixed = DrawScenes(work, "scenes-aspects", options.Size, options, log, options.Seed + 3, [SceneAspect.Square, new(2, 1), new(1, 2)]);
                trained = TrainTransformer(Path.Combine(work, "transformer-aspects"), trained, mixed, wide, options.AspectSteps, options.AspectLearningRate,
                    options, autoencoder, backend, log, progress);
            }
            File.Copy(trained, transformer, overwrite: true);
        }

        var settings = new
        {
            options.Scenes, options.Size, options.VaeSteps, options.VaeFullSizeSteps, options.Steps, options.LearningRate,
            options.AspectSteps, options.AspectLearningRate, options.Seed,
            T5Length = ToyT5Length, Guidance = ToyGuidance,
        };
        foreach (string weights in new[] { autoencoder, transformer })
            StampSettings(weights, JsonSerializer.Serialize(settings));
        var manifest = new Dictionary<string, object>
        {
            ["made_by"] = "influx-cli pretrain-toy",
            ["settings"] = settings,
            ["latents"] = new { latents.Mean, latents.Std },
            ["sha256"] = Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories)
                .Where(p => Path.GetFileName(p) != FluxModelFolder.ToyManifestFile).Order(StringComparer.Ordinal)
                .ToDictionary(p => Path.GetRelativePath(output, p).Replace('\\', '/'), p => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(p)))),
        };
        File.WriteAllText(Path.Combine(output, FluxModelFolder.ToyManifestFile), JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"toy model folder: {output} ({clock.Elapsed.TotalMinutes:F1} min); use it with --flux-dir {output}"));
    }

    /// <summary>The scenes of a stage in WORK/NAME, drawn unless a finished set is there (by default squares, seed + 1).</summary>
    private static string DrawScenes(string work, string name, int size, ToyPretrainRequest options, TextWriter log,
        long? seed = null, IReadOnlyList<SceneAspect>? aspects = null)
    {
        string folder = Path.Combine(work, name);
        string captions = Path.Combine(folder, "captions");
        if (!Directory.Exists(captions) || Directory.GetFiles(captions).Length != options.Scenes)
            DatasetWriter.WriteScenes(folder, options.Scenes, size, seed ?? options.Seed + 1, log, aspects);
        return folder;
    }

    /// <summary>
    /// One run training every transformer weight from <paramref name="start"/> as an inpainting model (resumed from its last
    /// checkpoint when interrupted); returns the trained weights' path. Images up to <paramref name="resolution"/>² pixels
    /// keep their size, so squares and 2:1 canvases of the same short side are drawn at the same scale.
    /// </summary>
    private static string TrainTransformer(string run, string start, string scenes, int resolution, int steps, double learningRate,
        ToyPretrainRequest options, string autoencoder, IBackend backend, TextWriter log, IProgress<TrainProgress>? progress)
    {
        string trained = Path.Combine(run, TransformerModel + ".safetensors");
        if (File.Exists(trained)) return trained;
        var checkpoints = Directory.Exists(run) ? Directory.GetFiles(run, "checkpoint-*.safetensors").Order(StringComparer.Ordinal).ToList() : [];
        LoraTraining.Train(new TrainRequest
        {
            Weights = start, Vae = autoencoder, Text = new TextEncoderSettings { TextEncoderDir = options.Output, T5Length = ToyT5Length },
            Data = scenes, Method = EditMethod.Fill, Full = true,
            Output = run, Steps = steps, LearningRate = learningRate, Schedule = "cosine", WarmupSteps = Math.Min(200, steps / 10),
            Resolution = resolution, BucketNoUpscale = true, Seed = options.Seed, CheckpointEvery = 500,
            // The shipped toy was pretrained with AdamW's torch default decay, before train's default became 1e-4.
            WeightDecay = 0.01,
            // The guidance input the toy always sees: FLUX Fill's sampling default, so `edit` needs no special setting.
            Guidance = ToyGuidance,
            Resume = checkpoints.Count > 0 ? checkpoints[^1] : null,
        }, backend, log, progress);
        return trained;
    }

    /// <summary>One autoencoder run (resumed from its checkpoint when interrupted); returns the trained weights' path.</summary>
    private static string TrainAutoencoder(string run, string images, int size, int steps, double learningRate, string? start,
        ToyPretrainRequest options, IBackend backend, TextWriter log)
    {
        string trained = Path.Combine(run, AutoencoderModel + ".safetensors");
        if (File.Exists(trained)) return trained;
        log.WriteLine($"== autoencoder: {steps} reconstruction steps at {size}×{size}");
        string checkpoint = Path.Combine(run, "checkpoint.safetensors");
        AutoencoderTraining.Train(new AutoencoderTrainRequest
        {
            Model = AutoencoderModel, Weights = start, Images = images, Output = run, Size = size, Batch = 4, Steps = steps,
            LearningRate = learningRate, Seed = options.Seed, CheckpointEvery = 250, LogEvery = 50,
            Resume = File.Exists(checkpoint) ? checkpoint : null,
        }, backend, log);
        return trained;
    }

    /// <summary>
    /// Mean and standard deviation of the latents the transformer learns (the encode entry's output, after the schema's
    /// scale_factor and shift_factor). Flow matching assumes about unit variance, as FLUX's own VAE constants give; a
    /// retrained autoencoder far from it needs new constants in its schema.
    /// </summary>
    private static (double Mean, double Std) LatentStatistics(string autoencoder, string images, TextWriter log)
    {
        using var backend = new CpuBackend();
        using var vae = LoadedModel.Load(autoencoder, VaeCodec.Family, backend, ModelCatalog.All);
        double sum = 0, squares = 0;
        long count = 0;
        foreach (string file in Directory.EnumerateFiles(images, "*.png").Order(StringComparer.Ordinal).Take(64))
            foreach (float value in VaeCodec.Encode(vae.Model, ImageFile.LoadRgb(file)).Data)
            {
                sum += value;
                squares += (double)value * value;
                count++;
            }
        double mean = sum / count, std = Math.Sqrt(Math.Max(0, squares / count - mean * mean));
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"latents: mean {mean:F3}, standard deviation {std:F3}"));
        if (std is < 0.7 or > 1.4)
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"warning: the latents are far from unit variance: in schemas/{AutoencoderModel}.json divide scale_factor by {std:F3} and add {mean:F3} / scale_factor to shift_factor, then rebuild and run this again"));
        return (mean, std);
    }

    /// <summary>
    /// Puts the settings that made a weights file into its own __metadata__ ("pretrain_toy"), so a copy taken out of
    /// the folder still says how to make it again; rewritten (atomically, tensors byte for byte) only when they differ.
    /// </summary>
    private static void StampSettings(string path, string settings)
    {
        const string Key = "pretrain_toy";
        Dictionary<string, string> metadata;
        List<RawTensor> tensors;
        using (var file = SafeTensorsFile.Open(path))
        {
            if (file.Metadata.TryGetValue(Key, out string? stamped) && stamped == settings) return;
            metadata = new Dictionary<string, string>(file.Metadata) { [Key] = settings };
            tensors = file.Tensors.Select(entry => new RawTensor(entry.Name, entry.DType, entry.Shape, file.GetBytes(entry).ToArray())).ToList();
        }
        SafeTensorsWriter.WriteRaw(path, tensors, metadata);
    }

    private static void WriteInitialised(IBackend backend, string modelName, string path, long seed)
    {
        if (File.Exists(path)) return;
        var model = ModelCatalog.All.Single(m => m.Descriptor.Name == modelName).Descriptor;
        var weights = FullWeightTraining.Initialize(backend, model, new TrainingRandom(seed));
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            FullWeightTraining.SaveWeights(path, backend, model, weights);
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }
}
