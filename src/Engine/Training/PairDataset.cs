using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using SixLabors.ImageSharp;

namespace InFluxEdit.Training;

/// <summary>A training folder that cannot be used as it is; the message names the file at fault.</summary>
public sealed class PairDatasetException(string message) : IOException(message);

/// <summary>
/// One training example: a source image, the edited target (the same file for a pre-made diptych, whose left half
/// is the source) and the caption. <see cref="Width"/> × <see cref="Height"/> is the size of one half.
/// </summary>
public sealed record TrainingPair(string Name, string SourcePath, string TargetPath, string CaptionPath, string Caption, int Width, int Height, bool Combined);

/// <summary>
/// Editing pairs on disk, checked up front so a bad file fails the run before the first step, not hours into it.
/// Layouts: DIR/source + DIR/target with captions in DIR/captions/NAME.txt or DIR/source/NAME.txt (same stems);
/// the seed's separate input, target and caption folders; pre-made diptychs [source | target] with --combined.
/// </summary>
public sealed class PairDataset
{
    public static readonly IReadOnlyList<string> ImageExtensions = [".png", ".jpg", ".jpeg", ".webp"];

    private PairDataset(IReadOnlyList<TrainingPair> pairs) => Pairs = pairs;

    public IReadOnlyList<TrainingPair> Pairs { get; }

    /// <summary>
    /// DIR/source and DIR/target; captions in DIR/captions or beside the sources. <paramref name="instancePrompt"/>,
    /// when given, stands in for a missing or empty caption (the seed's and diffusers' --instance_prompt); without it
    /// a missing caption is an error.
    /// </summary>
    public static PairDataset FromFolder(string directory, string? instancePrompt = null)
    {
        string source = Path.Combine(directory, "source"), target = Path.Combine(directory, "target");
        if (!Directory.Exists(source) || !Directory.Exists(target))
            throw new PairDatasetException(
                $"{directory} needs a 'source' and a 'target' folder of images with the same names (or pass the seed's folders separately, or --combined for diptychs)");
        string captions = Path.Combine(directory, "captions");
        return FromFolders(source, target, Directory.Exists(captions) ? [captions, source] : [source], instancePrompt);
    }

    /// <summary>
    /// For an inpainting LoRA (--method fill): DIR/images and DIR/masks (white = the region the model learns to fill),
    /// same stems; captions in DIR/captions or beside the images. A pair's source is the image, its target the mask.
    /// </summary>
    public static PairDataset FromMasked(string directory, string? instancePrompt = null)
    {
        string images = Path.Combine(directory, "images"), masks = Path.Combine(directory, "masks");
        if (!Directory.Exists(images) || !Directory.Exists(masks))
            throw new PairDatasetException($"{directory} needs an 'images' and a 'masks' folder with the same names for --method fill");
        string captions = Path.Combine(directory, "captions");
        return FromFolders(images, masks, Directory.Exists(captions) ? [captions, images] : [images], instancePrompt);
    }

    /// <summary>The seed's layout: input, target and caption folders given one by one.</summary>
    public static PairDataset FromSeparateFolders(string inputDirectory, string targetDirectory, string captionDirectory, string? instancePrompt = null)
    {
        foreach (string dir in new[] { inputDirectory, targetDirectory, captionDirectory })
            if (!Directory.Exists(dir)) throw new PairDatasetException($"the folder {dir} does not exist");
        return FromFolders(inputDirectory, targetDirectory, [captionDirectory], instancePrompt);
    }

    /// <summary>Pre-made diptychs (source on the left half, target on the right); captions in DIR/captions or beside them.</summary>
    public static PairDataset FromCombined(string directory, string? instancePrompt = null)
    {
        if (!Directory.Exists(directory)) throw new PairDatasetException($"the folder {directory} does not exist");
        string captions = Path.Combine(directory, "captions");
        string[] captionFolders = Directory.Exists(captions) ? [captions, directory] : [directory];
        var pairs = new List<TrainingPair>();
        foreach (var (stem, path) in Images(directory))
        {
            var (width, height) = Probe(path);
            if (width % 2 != 0)
                throw new PairDatasetException($"{path} is {width}×{height}; a diptych [source | target] must have an even width");
            var (captionPath, caption) = Caption(stem, path, captionFolders, instancePrompt);
            pairs.Add(new TrainingPair(stem, path, path, captionPath, caption, width / 2, height, Combined: true));
        }
        return Checked(pairs, directory);
    }

    private static PairDataset FromFolders(string sourceDirectory, string targetDirectory, string[] captionFolders, string? instancePrompt)
    {
        var targets = Images(targetDirectory).ToDictionary(i => i.Stem, i => i.Path, StringComparer.Ordinal);
        var pairs = new List<TrainingPair>();
        foreach (var (stem, sourcePath) in Images(sourceDirectory))
        {
            if (!targets.TryGetValue(stem, out string? targetPath))
                throw new PairDatasetException(
                    $"{sourcePath} has no target: expected {Path.Combine(targetDirectory, stem)} with one of {string.Join(", ", ImageExtensions)}");
            var (captionPath, caption) = Caption(stem, sourcePath, captionFolders, instancePrompt);
            var (width, height) = Probe(sourcePath);
            var (targetWidth, targetHeight) = Probe(targetPath);
            if (width != targetWidth || height != targetHeight)
                throw new PairDatasetException($"{targetPath} is {targetWidth}×{targetHeight} but its source {sourcePath} is {width}×{height}; a pair must have one size");
            pairs.Add(new TrainingPair(stem, sourcePath, targetPath, captionPath, caption, width, height, Combined: false));
        }
        return Checked(pairs, sourceDirectory);
    }

    private static PairDataset Checked(List<TrainingPair> pairs, string directory)
    {
        if (pairs.Count == 0)
            throw new PairDatasetException($"{directory} holds no images ({string.Join(", ", ImageExtensions)})");
        return new PairDataset(pairs);
    }

    /// <summary>Images of a folder by stem, in ordinal order so every machine sees the same list.</summary>
    private static IEnumerable<(string Stem, string Path)> Images(string directory)
    {
        var byStem = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (string path in Directory.EnumerateFiles(directory))
        {
            if (!ImageExtensions.Contains(Path.GetExtension(path).ToLowerInvariant())) continue;
            string stem = Path.GetFileNameWithoutExtension(path);
            if (byStem.TryGetValue(stem, out string? other))
                throw new PairDatasetException($"{path} and {other} have the same name; which one is meant is unclear");
            byStem[stem] = path;
        }
        return byStem.Select(p => (p.Key, p.Value));
    }

    /// <summary>The caption file's text; the instance prompt where there is none or it is empty (the path is then "").</summary>
    private static (string Path, string Text) Caption(string stem, string imagePath, string[] folders, string? instancePrompt)
    {
        foreach (string folder in folders)
        {
            string path = Path.Combine(folder, stem + ".txt");
            if (!File.Exists(path)) continue;
            string text = File.ReadAllText(path).Trim();
            return text.Length == 0 && instancePrompt != null ? ("", instancePrompt) : (path, text);
        }
        return instancePrompt != null ? ("", instancePrompt) : throw new PairDatasetException(
            $"{imagePath} has no caption: expected {string.Join(" or ", folders.Select(f => Path.Combine(f, stem + ".txt")))} (or give --instance-prompt for pairs without one)");
    }

    /// <summary>Width and height from the file header (no full decode); an unreadable file fails here, named.</summary>
    private static (int Width, int Height) Probe(string path)
    {
        try
        {
            var info = Image.Identify(path) ?? throw new PairDatasetException($"{path} is not an image in a format this build reads");
            return (info.Width, info.Height);
        }
        catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or ImageFormatException or NotSupportedException or IOException and not PairDatasetException)
        {
            throw new PairDatasetException($"{path} cannot be read as an image: {e.Message}");
        }
    }

    /// <summary>
    /// The pair at its bucket's size, [1, 3, H, W] in [−1, 1]: scaled (bicubic) to cover the bucket, then centre-cropped.
    /// A diptych is split into its halves first.
    /// </summary>
    public static (HostTensor Source, HostTensor Target) Load(TrainingPair pair, Bucket bucket)
    {
        HostTensor source, target;
        if (pair.Combined)
        {
            var diptych = LoadImage(pair.SourcePath);
            source = ImageSizing.Crop(diptych, 0, 0, pair.Height, pair.Width);
            target = ImageSizing.Crop(diptych, 0, pair.Width, pair.Height, pair.Width);
        }
        else
        {
            source = LoadImage(pair.SourcePath);
            target = LoadImage(pair.TargetPath);
        }
        return (AspectBuckets.Fit(source, bucket), AspectBuckets.Fit(target, bucket));
    }

    private static HostTensor LoadImage(string path)
    {
        try
        {
            return ImageFile.LoadRgb(path);
        }
        catch (InvalidDataException e)
        {
            throw new PairDatasetException(e.Message);
        }
    }

    /// <summary>
    /// One epoch's batches of pair indices: pairs of one bucket only share a batch, each bucket's pairs shuffled,
    /// then the batches shuffled, all from <paramref name="random"/> so a resumed run gets the same order.
    /// </summary>
    public IReadOnlyList<int[]> EpochBatches(AspectBuckets buckets, int batchSize, TrainingRandom random)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batches hold at least one pair");
        var batches = new List<int[]>();
        var groups = Enumerable.Range(0, Pairs.Count)
            .GroupBy(i => buckets.Assign(Pairs[i].Width, Pairs[i].Height))
            .OrderBy(g => g.Key.Width).ThenBy(g => g.Key.Height);
        foreach (var group in groups)
        {
            var members = group.ToList();
            random.Shuffle(members);
            batches.AddRange(members.Chunk(batchSize));
        }
        random.Shuffle(batches);
        return batches;
    }
}
