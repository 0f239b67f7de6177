using CommandLine;
using InFluxEdit.Datasets;

namespace InFluxEdit.Cli.Commands;

[Verb("dataset", HelpText = "Generate a training dataset. 'dataset circles' draws the seed's experiment: the source is a circle's outline on a plain background, the target the same circle filled with the colour the caption names on a named background colour (\"violet circle with orange background\"). Writes OUT/train and OUT/held-out in the layout 'train --data' reads, each with circles.json for scoring.")]
public sealed class DatasetOptions : OutputOptions
{
    [Value(0, MetaName = "KIND", Required = true, HelpText = "What to generate: circles (editing pairs) or scenes (inpainting images, masks and captions for pretraining).")]
    public string Kind { get; set; } = "";

    [Option("out", Required = true, HelpText = "The folder to write (train/ and held-out/ inside it).")]
    public string Output { get; set; } = "";

    [Option("count", Default = 64, HelpText = "Training pairs.")]
    public int Count { get; set; } = 64;

    [Option("held-out", Default = 8, HelpText = "Held-out pairs (drawn after the training pairs from the same stream, so they never repeat one).")]
    public int HeldOut { get; set; } = 8;

    [Option("size", Default = 64, HelpText = "Image side in pixels (a multiple of 16).")]
    public int Size { get; set; } = 64;

    [Option("aspects", Default = "1:1", HelpText = "scenes: the pictures' shapes in turn, as multiples of --size (the short side), e.g. 1:1,2:1,1:2 for squares, 2:1 canvases like a concat diptych, and tall ones.")]
    public string Aspects { get; set; } = "1:1";

    [Option("seed", Default = 0, HelpText = "The same seed gives the same files on every machine.")]
    public long Seed { get; set; }
}

public static class DatasetCommand
{
    /// <summary>What 'dataset --json' reports beside the folder written.</summary>
    public sealed record DatasetSummary(string Kind, int Count, int HeldOut, int Size, long Seed);

    public static int Run(DatasetOptions options)
    {
        var output = options.CommandOutput;
        if (options.Kind == "scenes") DatasetWriter.WriteScenes(options.Output, options.Count, options.Size, options.Seed, output.Log,
            SceneAspect.ParseList(options.Aspects));
        else if (options.Kind == "circles")
            DatasetWriter.WriteCircles(options.Output, options.Count, options.HeldOut, options.Size, options.Seed, output.Log);
        else throw new ArgumentException($"unknown dataset '{options.Kind}': this build draws 'circles' and 'scenes'");
        output.Wrote(options.Output);
        output.Result = new DatasetSummary(options.Kind, options.Count, options.Kind == "circles" ? options.HeldOut : 0, options.Size, options.Seed);
        return 0;
    }
}
