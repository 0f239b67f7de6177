using CommandLine;
using InFluxEdit.Cli.Datasets;

namespace InFluxEdit.Cli.Commands;

[Verb("dataset", HelpText = "Generate a training dataset. 'dataset circles' draws the seed's experiment: the source is a circle's outline on a plain background, the target the same circle filled with the colour the caption names on a named background colour (\"violet circle with orange background\"). Writes OUT/train and OUT/held-out in the layout 'train --data' reads, each with circles.json for scoring.")]
public sealed class DatasetOptions
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

    [Option("seed", Default = 0, HelpText = "The same seed gives the same files on every machine.")]
    public long Seed { get; set; }
}

public static class DatasetCommand
{
    public static int Run(DatasetOptions options)
    {
        if (options.Kind == "scenes") return WriteScenes(options);
        if (options.Kind != "circles")
            throw new ArgumentException($"unknown dataset '{options.Kind}': this build draws 'circles' and 'scenes'");
        if (options.HeldOut < 0) throw new ArgumentException($"--held-out must not be negative (got {options.HeldOut})");
        if (options.Count < 1) throw new ArgumentException($"--count must be at least 1 (got {options.Count})");
        Runtime.IO.PathChecks.CreateFolder(options.Output, "--out");
        var samples = CirclesDataset.Draw(options.Count + options.HeldOut, options.Size, options.Seed);
        string train = Path.Combine(options.Output, "train"), heldOut = Path.Combine(options.Output, "held-out");
        CirclesDataset.WriteSplit(train, samples.Take(options.Count).ToList());
        if (options.HeldOut > 0) CirclesDataset.WriteSplit(heldOut, samples.Skip(options.Count).ToList());
        System.Console.WriteLine($"circles: {options.Count} training pairs in {train}" +
            (options.HeldOut > 0 ? $", {options.HeldOut} held-out in {heldOut}" : "") +
            $" ({options.Size}×{options.Size}, seed {options.Seed}, {CirclesDataset.Palette.Count} colours)");
        return 0;
    }

    /// <summary>A [1, 1, H, W] mask in [0, 1] as a gray RGB image (white = 1), the form mask files take.</summary>
    private static Runtime.Tensors.HostTensor MaskAsGray(Runtime.Tensors.HostTensor mask)
    {
        int plane = mask.Shape[2] * mask.Shape[3];
        var gray = new Runtime.Tensors.HostTensor(1, 3, mask.Shape[2], mask.Shape[3]);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < plane; i++) gray.Data[c * plane + i] = mask.Data[i] * 2 - 1;
        return gray;
    }

    /// <summary>Inpainting scenes in the layout 'train --method fill' reads: OUT/images, OUT/masks, OUT/captions.</summary>
    private static int WriteScenes(DatasetOptions options)
    {
        if (options.Count < 1) throw new ArgumentException($"--count must be at least 1 (got {options.Count})");
        if (options.Size < 16 || options.Size % 16 != 0) throw new ArgumentException($"--size must be a multiple of 16 (got {options.Size})");
        Runtime.IO.PathChecks.CreateFolder(options.Output, "--out");
        foreach (string folder in new[] { "images", "masks", "captions" }) Directory.CreateDirectory(Path.Combine(options.Output, folder));
        var random = new Runtime.Training.TrainingRandom(options.Seed);
        for (int i = 0; i < options.Count; i++)
        {
            var scene = ShapeScenes.Draw(random, options.Size);
            string name = i.ToString("D5", System.Globalization.CultureInfo.InvariantCulture);
            Runtime.Images.ImageFile.SaveRgb(scene.Image, Path.Combine(options.Output, "images", name + ".png"));
            Runtime.Images.ImageFile.SaveRgb(MaskAsGray(scene.Mask), Path.Combine(options.Output, "masks", name + ".png"));
            File.WriteAllText(Path.Combine(options.Output, "captions", name + ".txt"), scene.Caption + "\n");
        }
        System.Console.WriteLine($"scenes: {options.Count} images, masks and captions in {options.Output} ({options.Size}×{options.Size}, seed {options.Seed})");
        return 0;
    }
}
