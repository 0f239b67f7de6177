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

    /// <summary>
    /// Inpainting scenes in the layout 'train --method fill' reads: OUT/images, OUT/masks, OUT/captions. Scene i has the
    /// aspect <paramref name="aspects"/>[i mod n] with <paramref name="size"/> as its short side (all squares by default).
    /// </summary>
    public static void WriteScenes(string output, int count, int size, long seed, TextWriter? log = null, IReadOnlyList<SceneAspect>? aspects = null)
    {
        if (count < 1) throw new ArgumentException($"--count must be at least 1 (got {count})");
        if (size < 16 || size % 16 != 0) throw new ArgumentException($"--size must be a multiple of 16 (got {size})");
        aspects = aspects is { Count: > 0 } ? aspects : [SceneAspect.Square];
        Runtime.IO.PathChecks.CreateFolder(output, "--out");
        foreach (string folder in new[] { "images", "masks", "captions" }) Directory.CreateDirectory(Path.Combine(output, folder));
        var random = new TrainingRandom(seed);
        for (int i = 0; i < count; i++)
        {
            var aspect = aspects[i % aspects.Count];
            var scene = ShapeScenes.Draw(random, size * aspect.Width, size * aspect.Height);
            string name = i.ToString("D5", CultureInfo.InvariantCulture);
            ImageFile.SaveRgb(scene.Image, Path.Combine(output, "images", name + ".png"));
            ImageFile.SaveRgb(MaskAsGray(scene.Mask), Path.Combine(output, "masks", name + ".png"));
            File.WriteAllText(Path.Combine(output, "captions", name + ".txt"), scene.Caption + "\n");
        }
        log?.WriteLine($"scenes: {count} images, masks and captions in {output} ({string.Join(", ", aspects.Select(a => $"{size * a.Width}×{size * a.Height}"))}, seed {seed})");
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

/// <summary>A scene's shape as whole multiples of its short side: 1:1, 2:1 (twice as wide as high) or 1:2.</summary>
public readonly record struct SceneAspect(int Width, int Height)
{
    public static SceneAspect Square { get; } = new(1, 1);

    /// <summary>Reads "1:1,2:1,1:2": each side a whole multiple of the short side, one of them 1.</summary>
    public static IReadOnlyList<SceneAspect> ParseList(string text, string option = "--aspects")
    {
        var aspects = new List<SceneAspect>();
        foreach (string item in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = item.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int width)
                || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int height)
                || width < 1 || height < 1 || Math.Min(width, height) != 1 || Math.Max(width, height) > 4)
                throw new ArgumentException($"{option}: '{item}' is not an aspect such as 1:1, 2:1 or 1:2 (whole multiples of the short side, at most 4:1)");
            aspects.Add(new SceneAspect(width, height));
        }
        return aspects.Count > 0 ? aspects : throw new ArgumentException($"{option} names no aspect; give e.g. 1:1,2:1,1:2");
    }

    public override string ToString() => $"{Width}:{Height}";
}
