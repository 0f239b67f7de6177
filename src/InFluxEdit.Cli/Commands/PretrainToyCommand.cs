using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using CommandLine;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Cli.Text;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("pretrain-toy", HelpText = "Make the project's toy FLUX Fill base from nothing, as a FLUX model folder (--flux-dir reads it): tokenizers, seeded text encoders (kept frozen), an autoencoder trained for reconstruction on procedural scenes, then the toy transformer trained in full as an inpainting model on the same scenes with random masks and their captions. Every stage is seeded; a stage whose file exists is kept, so an interrupted run continues.")]
public sealed class PretrainToyOptions : DeviceOptions
{
    [Option("out", Default = "models/toy", HelpText = "The model folder to write.")]
    public string Output { get; set; } = "models/toy";

    [Option("work", HelpText = "Where the scenes and the runs' checkpoints go (default: OUT/../toy-work).")]
    public string? Work { get; set; }

    [Option("scenes", Default = 2000, HelpText = "Procedural scenes drawn for every stage.")]
    public int Scenes { get; set; } = 2000;

    [Option("size", Default = 64, HelpText = "Scene side in pixels: 64 gives the transformer 4×4 tokens (at 32 it sees 2×2, too few to place a shape).")]
    public int Size { get; set; } = 64;

    [Option("vae-steps", Default = 8000, HelpText = "Autoencoder steps at half the scene size (batch 4, about 9 a second on 2 cores at 32×32); the flat-colour scenes need several thousand (MSE 0.17 after 1,500, 0.0125 after 8,000).")]
    public int VaeSteps { get; set; } = 8000;

    [Option("vae-full-size-steps", Default = 500, HelpText = "Autoencoder steps at the full scene size after those (about 4 a second at 64×64): MSE 0.055 → 0.004 at 64×64 in 500.")]
    public int VaeFullSizeSteps { get; set; } = 500;

    [Option("steps", Default = 200000, HelpText = "Transformer steps, one scene each (about 240 a second on 2 cores at 64×64 with 16 T5 tokens).")]
    public int Steps { get; set; } = 200000;

    [Option("lr", Default = 1e-3, HelpText = "Transformer learning rate (AdamW, cosine after a warm-up).")]
    public double LearningRate { get; set; } = 1e-3;

    [Option("seed", Default = 0L, HelpText = "Seed of every stage.")]
    public long Seed { get; set; }
}

public static class PretrainToyCommand
{
    public const string TransformerModel = "flux-fill-toy", AutoencoderModel = "flux-vae-toy", ClipModel = "clip-tiny", T5Model = "t5-tiny";
    public const string TransformerFile = "flux1-fill-toy.safetensors";
    public const double ToyGuidance = 30.0;
    /// <summary>T5 tokens per caption: the captions' six words and end token with room to spare; every token costs the transformer as much as an image token.</summary>
    public const int ToyT5Length = 16;

    public static int Run(PretrainToyOptions options) => Run(options, System.Console.Out);

    public static int Run(PretrainToyOptions options, TextWriter log)
    {
        string output = options.Output, work = options.Work ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, "toy-work");
        Directory.CreateDirectory(output);
        Directory.CreateDirectory(work);
        var clock = Stopwatch.StartNew();

        log.WriteLine("== tokenizers and text encoders (seeded, frozen)");
        ToyTokenizers.WriteClip(Path.Combine(output, "tokenizer"));
        ToyTokenizers.WriteSentencePiece(Path.Combine(output, "tokenizer_2", "spiece.model"), Datasets.ShapeScenes.Vocabulary);
        using (var backend = new Runtime.Backends.Cpu.CpuBackend())
        {
            WriteInitialised(backend, ClipModel, Path.Combine(output, "text_encoder", "model.safetensors"), options.Seed);
            WriteInitialised(backend, T5Model, Path.Combine(output, "text_encoder_2", "model.safetensors"), options.Seed + 1);
        }

        string scenes = DrawScenes(work, "scenes", options.Size, options);

        string autoencoder = Path.Combine(output, FluxModelFolder.AutoencoderFile);
        if (!File.Exists(autoencoder))
        {
            // Half size first, where a step costs a quarter: the same scenes (the same seed, geometry relative to the
            // side) drawn at half the side; then a short run at full size teaches the larger flat areas and gentler edges.
            int half = options.Size / 2;
            string halfScenes = DrawScenes(work, $"scenes-{half}", half, options);
            string halfRun = TrainAutoencoder(Path.Combine(work, "vae"), Path.Combine(halfScenes, "images"), half, options.VaeSteps, 2e-3, null, options, log);
            string fullRun = TrainAutoencoder(Path.Combine(work, "vae-full-size"), Path.Combine(scenes, "images"), options.Size, options.VaeFullSizeSteps, 1e-3,
                halfRun, options, log);
            File.Copy(fullRun, autoencoder, overwrite: true);
        }
        var latents = LatentStatistics(autoencoder, Path.Combine(scenes, "images"), log);

        string transformer = Path.Combine(output, TransformerFile);
        if (!File.Exists(transformer))
        {
            log.WriteLine($"== transformer: {options.Steps} inpainting steps, every weight");
            string run = Path.Combine(work, "transformer");
            string initial = Path.Combine(work, "flux-fill-toy-init.safetensors");
            using (var backend = new Runtime.Backends.Cpu.CpuBackend())
                WriteInitialised(backend, TransformerModel, initial, options.Seed + 2);
            var checkpoints = Directory.Exists(run) ? Directory.GetFiles(run, "checkpoint-*.safetensors").Order(StringComparer.Ordinal).ToList() : [];
            Check(TrainCommand.Run(new TrainOptions
            {
                Weights = initial, Vae = autoencoder, TextEncoderDir = output, Data = scenes, Method = EditMethod.Fill, Full = true,
                Output = run, Steps = options.Steps, LearningRate = options.LearningRate, Schedule = "cosine", WarmupSteps = Math.Min(200, options.Steps / 10),
                Resolution = options.Size, Seed = options.Seed, CheckpointEvery = 500, T5Length = ToyT5Length, Device = options.Device,
                // The shipped toy was pretrained with AdamW's torch default decay, before train's default became 1e-4.
                WeightDecay = 0.01,
                // The guidance input the toy always sees: FLUX Fill's sampling default, so `edit` needs no special setting.
                Guidance = ToyGuidance,
                Resume = checkpoints.Count > 0 ? checkpoints[^1] : null,
            }, log, ModelCatalog.All), "the transformer");
            File.Copy(Path.Combine(run, TransformerModel + ".safetensors"), transformer, overwrite: true);
        }

        var settings = new
        {
            options.Scenes, options.Size, options.VaeSteps, options.VaeFullSizeSteps, options.Steps, options.LearningRate, options.Seed,
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
        return 0;
    }

    private static string DrawScenes(string work, string name, int size, PretrainToyOptions options)
    {
        string folder = Path.Combine(work, name);
        string captions = Path.Combine(folder, "captions");
        if (!Directory.Exists(captions) || Directory.GetFiles(captions).Length != options.Scenes)
            DatasetCommand.Run(new DatasetOptions { Kind = "scenes", Output = folder, Count = options.Scenes, Size = size, Seed = options.Seed + 1 });
        return folder;
    }

    /// <summary>One autoencoder run (resumed from its checkpoint when interrupted); returns the trained weights' path.</summary>
    private static string TrainAutoencoder(string run, string images, int size, int steps, double learningRate, string? start,
        PretrainToyOptions options, TextWriter log)
    {
        string trained = Path.Combine(run, AutoencoderModel + ".safetensors");
        if (File.Exists(trained)) return trained;
        log.WriteLine($"== autoencoder: {steps} reconstruction steps at {size}×{size}");
        string checkpoint = Path.Combine(run, "checkpoint.safetensors");
        Check(TrainVaeCommand.Run(new TrainVaeOptions
        {
            Model = AutoencoderModel, Weights = start, Images = images, Output = run, Size = size, Batch = 4, Steps = steps,
            LearningRate = learningRate, Seed = options.Seed, CheckpointEvery = 250, LogEvery = 50,
            Resume = File.Exists(checkpoint) ? checkpoint : null, Device = options.Device,
        }), "the autoencoder");
        return trained;
    }

    /// <summary>
    /// Mean and standard deviation of the latents the transformer learns (the encode entry's output, after the schema's
    /// scale_factor and shift_factor). Flow matching assumes about unit variance, as FLUX's own VAE constants give; a
    /// retrained autoencoder far from it needs new constants in its schema.
    /// </summary>
    private static (double Mean, double Std) LatentStatistics(string autoencoder, string images, TextWriter log)
    {
        using var backend = new Runtime.Backends.Cpu.CpuBackend();
        using var vae = LoadedModel.Load(autoencoder, VaeCodec.Family, backend, ModelCatalog.All);
        double sum = 0, squares = 0;
        long count = 0;
        foreach (string file in Directory.EnumerateFiles(images, "*.png").Order(StringComparer.Ordinal).Take(64))
            foreach (float value in VaeCodec.Encode(vae.Model, Runtime.Images.ImageFile.LoadRgb(file)).Data)
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

    private static void Check(int code, string what)
    {
        if (code != 0) throw new InvalidOperationException($"training {what} failed (exit code {code})");
    }
}
