using System.Globalization;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Datasets;

/// <summary>Draws the project's datasets into folders in the layouts training reads.</summary>
public static class DatasetWriter
{
    /// <summary>
    /// The seed's circles experiment: <paramref name="count"/> training pairs in OUT/train and <paramref name="heldOut"/>
    /// held-out ones in OUT/held-out (drawn after them from the same stream), each with circles.json for scoring.
    /// </summary>
    public static void WriteCircles(string output, int count, int heldOut, int size, long seed, TextWriter? log = null)
    {
        if (heldOut < 0) throw new ArgumentException($"--held-out must not be negative (got {heldOut})");
        if (count < 1) throw new ArgumentException($"--count must be at least 1 (got {count})");
        Runtime.IO.PathChecks.CreateFolder(output, "--out");
        var samples = CirclesDataset.Draw(count + heldOut, size, seed);
        string train = Path.Combine(output, "train"), heldOutFolder = Path.Combine(output, "held-out");
        CirclesDataset.WriteSplit(train, samples.Take(count).ToList());
        if (heldOut > 0) CirclesDataset.WriteSplit(heldOutFolder, samples.Skip(count).ToList());
        log?.WriteLine($"circles: {count} training pairs in {train}" +
            (heldOut > 0 ? $", {heldOut} held-out in {heldOutFolder}" : "") +
            $" ({size}×{size}, seed {seed}, {CirclesDataset.Palette.Count} colours)");
    }

    /// <summary>Inpainting scenes in the layout 'train --method fill' reads: OUT/images, OUT/masks, OUT/captions.</summary>
    public static void WriteScenes(string output, int count, int size, long seed, TextWriter? log = null)
    {
        if (count < 1) throw new ArgumentException($"--count must be at least 1 (got {count})");
        if (size < 16 || size % 16 != 0) throw new ArgumentException($"--size must be a multiple of 16 (got {size})");
        Runtime.IO.PathChecks.CreateFolder(output, "--out");
        foreach (string folder in new[] { "images", "masks", "captions" }) Directory.CreateDirectory(Path.Combine(output, folder));
        var random = new TrainingRandom(seed);
        for (int i = 0; i < count; i++)
        {
            var scene = ShapeScenes.Draw(random, size);
            string name = i.ToString("D5", CultureInfo.InvariantCulture);
            ImageFile.SaveRgb(scene.Image, Path.Combine(output, "images", name + ".png"));
            ImageFile.SaveRgb(MaskAsGray(scene.Mask), Path.Combine(output, "masks", name + ".png"));
            File.WriteAllText(Path.Combine(output, "captions", name + ".txt"), scene.Caption + "\n");
        }
        log?.WriteLine($"scenes: {count} images, masks and captions in {output} ({size}×{size}, seed {seed})");
    }

    /// <summary>A [1, 1, H, W] mask in [0, 1] as a gray RGB image (white = 1), the form mask files take.</summary>
    private static HostTensor MaskAsGray(HostTensor mask)
    {
        int plane = mask.Shape[2] * mask.Shape[3];
        var gray = new HostTensor(1, 3, mask.Shape[2], mask.Shape[3]);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < plane; i++) gray.Data[c * plane + i] = mask.Data[i] * 2 - 1;
        return gray;
    }
}
