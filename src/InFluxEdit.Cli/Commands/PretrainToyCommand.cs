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

    [Option("scenes", Default = 2000, HelpText = "Procedural scenes drawn for both stages.")]
    public int Scenes { get; set; } = 2000;

    [Option("size", Default = 32, HelpText = "Scene side in pixels.")]
    public int Size { get; set; } = 32;

    [Option("vae-steps", Default = 8000, HelpText = "Autoencoder steps (batch 4, about 9 a second on 2 cores at 32×32); the flat-colour scenes need several thousand (MSE 0.17 after 1,500, 0.0125 after 8,000).")]
    public int VaeSteps { get; set; } = 8000;

    [Option("steps", Default = 40000, HelpText = "Transformer steps (about 130 a second on 2 cores at 32×32).")]
    public int Steps { get; set; } = 40000;

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
    public const int ToyT5Length = 128;

    public static int Run(PretrainToyOptions options) => Run(options, System.Console.Out);

    public static int Run(PretrainToyOptions options, TextWriter log)
    {
        string output = options.Output, work = options.Work ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, "toy-work");
        Directory.CreateDirectory(output);
        Directory.CreateDirectory(work);
        var clock = Stopwatch.StartNew();

        log.WriteLine("== tokenizers and text encoders (seeded, frozen)");
        ToyTokenizers.WriteClip(Path.Combine(output, "tokenizer"));
        ToyTokenizers.WriteSentencePiece(Path.Combine(output, "tokenizer_2", "spiece.model"));
        using (var backend = new Runtime.Backends.Cpu.CpuBackend())
        {
            WriteInitialised(backend, ClipModel, Path.Combine(output, "text_encoder", "model.safetensors"), options.Seed);
            WriteInitialised(backend, T5Model, Path.Combine(output, "text_encoder_2", "model.safetensors"), options.Seed + 1);
        }

        string scenes = Path.Combine(work, "scenes");
        if (!Directory.Exists(Path.Combine(scenes, "captions")) || Directory.GetFiles(Path.Combine(scenes, "captions")).Length != options.Scenes)
            DatasetCommand.Run(new DatasetOptions { Kind = "scenes", Output = scenes, Count = options.Scenes, Size = options.Size, Seed = options.Seed + 1 });

        string autoencoder = Path.Combine(output, FluxModelFolder.AutoencoderFile);
        if (!File.Exists(autoencoder))
        {
            log.WriteLine($"== autoencoder: {options.VaeSteps} reconstruction steps");
            string run = Path.Combine(work, "vae");
            Check(TrainVaeCommand.Run(new TrainVaeOptions
            {
                Model = AutoencoderModel, Images = Path.Combine(scenes, "images"), Output = run, Size = options.Size, Batch = 4,
                Steps = options.VaeSteps, LearningRate = 2e-3, Seed = options.Seed, CheckpointEvery = 250, LogEvery = 50,
                Resume = File.Exists(Path.Combine(run, "checkpoint.safetensors")) ? Path.Combine(run, "checkpoint.safetensors") : null,
                Device = options.Device,
            }), "the autoencoder");
            File.Copy(Path.Combine(run, AutoencoderModel + ".safetensors"), autoencoder, overwrite: true);
        }

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
                // The guidance input the toy always sees: FLUX Fill's sampling default, so `edit` needs no special setting.
                Guidance = ToyGuidance,
                Resume = checkpoints.Count > 0 ? checkpoints[^1] : null,
            }, log, ModelCatalog.All), "the transformer");
            File.Copy(Path.Combine(run, TransformerModel + ".safetensors"), transformer, overwrite: true);
        }

        var manifest = new Dictionary<string, object>
        {
            ["made_by"] = "influx-cli pretrain-toy",
            ["settings"] = new { options.Scenes, options.Size, options.VaeSteps, options.Steps, options.LearningRate, options.Seed, T5Length = ToyT5Length, Guidance = ToyGuidance },
            ["sha256"] = Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories)
                .Where(p => Path.GetFileName(p) != "toy.json").Order(StringComparer.Ordinal)
                .ToDictionary(p => Path.GetRelativePath(output, p).Replace('\\', '/'), p => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(p)))),
        };
        File.WriteAllText(Path.Combine(output, "toy.json"), JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"toy model folder: {output} ({clock.Elapsed.TotalMinutes:F1} min); use it with --flux-dir {output}"));
        return 0;
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
