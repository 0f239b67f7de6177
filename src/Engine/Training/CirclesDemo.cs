using System.Diagnostics;
using InFluxEdit.Datasets;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;

namespace InFluxEdit.Training;

/// <summary>The demo's sizes (the options of `influx-cli demo`).</summary>
public sealed record DemoRequest
{
    /// <summary>The output folder: the dataset, the training run, the LoRA and the contact sheet.</summary>
    public string Output { get; init; } = "runs/circles-demo";

    /// <summary>The base model folder; null: the toy base (<see cref="ToyBase.FindFolder"/>).</summary>
    public string? FluxDir { get; init; }
    public int Steps { get; init; } = 40000;
    public int Count { get; init; } = 512;
    public int HeldOut { get; init; } = 32;
    public int Size { get; init; } = 64;
    public long Seed { get; init; }
}

/// <summary>How many held-out edits have each caption colour right, of how many, and where the results are.</summary>
public sealed record DemoResult(CirclesDataset.ColourTally Colours, int Count, string ContactSheet, string LoraPath, TimeSpan Elapsed);

/// <summary>
/// The whole method on a laptop: draws the circles dataset, trains a method-(b) editing LoRA on the toy base, edits
/// the held-out sources with it (the run's last validation) and scores the colours of the edits.
/// </summary>
public static class CirclesDemo
{
    public static DemoResult Run(DemoRequest request, IBackend backend, TextWriter? log = null, IProgress<TrainProgress>? progress = null,
        IProgress<StageProgress>? stages = null, CancellationToken cancellation = default)
    {
        log ??= TextWriter.Null;
        string baseModel = request.FluxDir ?? ToyBase.FindFolder();
        var clock = Stopwatch.StartNew();
        string data = Path.Combine(request.Output, "circles");
        DatasetWriter.WriteCircles(data, request.Count, request.HeldOut, request.Size, request.Seed, log);
        var train = new TrainRequest
        {
            FluxDir = baseModel, Data = Path.Combine(data, "train"), Validation = Path.Combine(data, "held-out"), Method = EditMethod.Channel,
            Output = Path.Combine(request.Output, "run"), Steps = request.Steps, LearningRate = 1e-3, Resolution = request.Size, Seed = request.Seed,
            CheckpointEvery = request.Steps,
            // The demo draws its data again each time: its own earlier run in the folder is replaced, not a user's work.
            Overwrite = true,
        };
        var trained = LoraTraining.Train(train, backend, log, progress, stages, cancellation);

        string edits = Path.Combine(train.Output, "validation", $"step-{request.Steps:D6}");
        var samples = CirclesDataset.ReadSplit(Path.Combine(data, "held-out"));
        var colours = new CirclesDataset.ColourTally();
        foreach (var sample in samples) colours.Add(ImageFile.LoadRgb(Path.Combine(edits, sample.Name + ".png")), sample);
        return new DemoResult(colours, samples.Count, Path.Combine(edits, "contact-sheet.png"), train.LoraPath, clock.Elapsed);
    }
}
