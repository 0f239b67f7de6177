using System.Globalization;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Datasets;
using InFluxEdit.Training;

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
    /// <summary>What 'demo --json' reports: how many held-out edits have each colour right, of how many.</summary>
    public sealed record DemoScore(int Count, int BothRight, int FillRight, int BackgroundRight);

    public static int Run(DemoOptions options) => Run(options, options.CommandOutput, out _);

    public static int Run(DemoOptions options, TextWriter log) => Run(options, CommandOutput.Plain(log), out _);

    public static int Run(DemoOptions options, TextWriter log, out (CirclesDataset.ColourTally Colours, int Count) score) =>
        Run(options, CommandOutput.Plain(log), out score);

    /// <param name="score">How many held-out edits have each colour right, and of how many.</param>
    private static int Run(DemoOptions options, CommandOutput output, out (CirclesDataset.ColourTally Colours, int Count) score)
    {
        var log = output.Log;
        using var backend = options.CreateBackend(log);
        var result = CirclesDemo.Run(new DemoRequest
        {
            Output = options.Output, FluxDir = options.FluxDir, Steps = options.Steps, Count = options.Count, HeldOut = options.HeldOut,
            Size = options.Size, Seed = options.Seed,
        }, backend, log, output.Training, output.Stages);
        var (colours, count) = (result.Colours, result.Count);
        score = (colours, count);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out edits with the colours their captions name: {colours.Both}/{count} ({100.0 * colours.Both / count:F0}%; fill {100.0 * colours.Fill / count:F0}%, background {100.0 * colours.Background / count:F0}%)"));
        log.WriteLine($"contact sheet (source | target | result): {result.ContactSheet}");
        log.WriteLine($"LoRA: {result.LoraPath}  ({result.Elapsed.TotalMinutes:F1} min in all)");
        output.Wrote(result.ContactSheet);
        output.Wrote(result.LoraPath);
        output.Result = new DemoScore(count, colours.Both, colours.Fill, colours.Background);
        return 0;
    }
}
