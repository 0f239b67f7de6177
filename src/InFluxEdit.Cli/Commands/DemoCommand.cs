using System.Diagnostics;
using System.Globalization;
using CommandLine;
using InFluxEdit.Cli.Datasets;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;

namespace InFluxEdit.Cli.Commands;

[Verb("demo", HelpText = "The whole method on a laptop: draws the circles dataset, trains a method-(b) editing LoRA (channel: the source as the Fill conditioning, all-white mask) on the project's toy FLUX Fill base (models/toy), edits the held-out sources with it and writes a contact sheet (source | target | result), then scores the colours of the edits.")]
public sealed class DemoOptions : DeviceOptions
{
    [Option("out", Default = "runs/circles-demo", HelpText = "The output folder: the dataset, the training run, the LoRA and the contact sheet.")]
    public string Output { get; set; } = "runs/circles-demo";

    [Option("flux-dir", HelpText = "The base model folder (default: the repository's models/toy).")]
    public string? FluxDir { get; set; }

    [Option("steps", Default = 40000, HelpText = "LoRA training steps (about 300 a second on 2 cores).")]
    public int Steps { get; set; } = 40000;

    [Option("count", Default = 512, HelpText = "Training pairs.")]
    public int Count { get; set; } = 512;

    [Option("held-out", Default = 32, HelpText = "Held-out pairs edited and scored.")]
    public int HeldOut { get; set; } = 32;

    [Option("size", Default = 64, HelpText = "Image side in pixels (the toy base's training size).")]
    public int Size { get; set; } = 64;

    [Option("seed", Default = 0L, HelpText = "Seed of the dataset, the training and the edits.")]
    public long Seed { get; set; }
}

public static class DemoCommand
{
    public static int Run(DemoOptions options) => Run(options, System.Console.Out);

    public static int Run(DemoOptions options, TextWriter log) => Run(options, log, out _);

    /// <param name="score">How many held-out edits have each colour right, and of how many.</param>
    public static int Run(DemoOptions options, TextWriter log, out (CirclesDataset.ColourTally Colours, int Count) score)
    {
        score = (new CirclesDataset.ColourTally(), 0);
        string baseModel = options.FluxDir ?? ToyModelFolder();
        var clock = Stopwatch.StartNew();
        string data = Path.Combine(options.Output, "circles");
        DatasetCommand.Run(new DatasetOptions { Kind = "circles", Output = data, Count = options.Count, HeldOut = options.HeldOut, Size = options.Size, Seed = options.Seed });
        var train = new TrainOptions
        {
            FluxDir = baseModel, Data = Path.Combine(data, "train"), Validation = Path.Combine(data, "held-out"), Method = EditMethod.Channel,
            Output = Path.Combine(options.Output, "run"), Steps = options.Steps, LearningRate = 1e-3, Resolution = options.Size, Seed = options.Seed,
            CheckpointEvery = options.Steps, Device = options.Device,
            // The demo draws its data again each time: its own earlier run in the folder is replaced, not a user's work.
            Overwrite = true,
        };
        int code = TrainCommand.Run(train, log, ModelCatalog.All);
        if (code != 0) return code;

        string edits = Path.Combine(train.Output, "validation", $"step-{options.Steps:D6}");
        var samples = CirclesDataset.ReadSplit(Path.Combine(data, "held-out"));
        var colours = new CirclesDataset.ColourTally();
        foreach (var sample in samples) colours.Add(ImageFile.LoadRgb(Path.Combine(edits, sample.Name + ".png")), sample);
        int count = samples.Count;
        score = (colours, count);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out edits with the colours their captions name: {colours.Both}/{count} ({100.0 * colours.Both / count:F0}%; fill {100.0 * colours.Fill / count:F0}%, background {100.0 * colours.Background / count:F0}%)"));
        log.WriteLine($"contact sheet (source | target | result): {Path.Combine(edits, "contact-sheet.png")}");
        log.WriteLine($"LoRA: {TrainCommand.LoraPath(train)}  ({clock.Elapsed.TotalMinutes:F1} min in all)");
        return 0;
    }

    /// <summary>models/toy of the repository: looked for from the working folder up, then from the program's folder up.</summary>
    private static string ToyModelFolder()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "toy");
                if (File.Exists(Path.Combine(candidate, PretrainToyCommand.TransformerFile))) return candidate;
            }
        throw new DirectoryNotFoundException("the toy model folder models/toy was not found above this folder: run from the repository, give --flux-dir, or make it with 'influx-cli pretrain-toy'");
    }
}
