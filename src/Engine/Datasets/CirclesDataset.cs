using System.Globalization;
using System.Text.Json;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Datasets;

/// <summary>A colour the captions name, in 8-bit sRGB.</summary>
public sealed record NamedColour(string Name, byte R, byte G, byte B);

/// <summary>
/// One circles example: where the circle is (pixels, centre and radius) and the colours its caption names. The source
/// is the circle's outline on a plain background; the target the same circle filled with <see cref="Fill"/> on
/// <see cref="Background"/>.
/// </summary>
public sealed record CircleSample(string Name, int Size, double CentreX, double CentreY, double Radius, string Fill, string Background)
{
    public string Caption => $"{Fill} circle with {Background} background";
}

/// <summary>
/// The seed's editing experiment, drawn procedurally: fill an outlined circle with the colour the caption names and
/// paint the background with another. Every draw comes from one seeded xoshiro256** stream, so a seed gives the same
/// files on every machine.
/// </summary>
public static class CirclesDataset
{
    public static readonly IReadOnlyList<NamedColour> Palette =
    [
        new("red", 230, 25, 35), new("orange", 245, 130, 30), new("yellow", 250, 215, 40), new("green", 40, 170, 70),
        new("cyan", 30, 200, 220), new("blue", 35, 75, 225), new("violet", 145, 60, 210), new("pink", 245, 115, 185),
    ];

    private static readonly NamedColour PlainBackground = new("plain", 240, 240, 240);
    private static readonly NamedColour Outline = new("outline", 30, 30, 30);
    private const int Supersampling = 4;

    /// <summary>The metadata file of a split: the samples' geometry and colours, for scoring edits.</summary>
    public const string MetadataFile = "circles.json";

    public static IReadOnlyList<CircleSample> Draw(int count, int size, long seed)
    {
        if (count < 1) throw new ArgumentException($"--count must be at least 1 (got {count})");
        if (size < 16 || size % 16 != 0) throw new ArgumentException($"--size must be a multiple of 16 of at least 16 pixels (got {size})");
        var random = new TrainingRandom(seed);
        var samples = new List<CircleSample>(count);
        int digits = Math.Max(4, (count - 1).ToString(CultureInfo.InvariantCulture).Length);
        for (int i = 0; i < count; i++)
        {
            double radius = size * (0.18 + 0.17 * random.NextDouble());
            double margin = radius + size * 0.06;
            double centreX = margin + (size - 2 * margin) * random.NextDouble();
            double centreY = margin + (size - 2 * margin) * random.NextDouble();
            int fill = random.NextInt(Palette.Count);
            int background = (fill + 1 + random.NextInt(Palette.Count - 1)) % Palette.Count;
            samples.Add(new CircleSample(i.ToString(CultureInfo.InvariantCulture).PadLeft(digits, '0'), size,
                centreX, centreY, radius, Palette[fill].Name, Palette[background].Name));
        }
        return samples;
    }

    public static NamedColour Colour(string name) =>
        Palette.FirstOrDefault(c => c.Name == name) ?? throw new ArgumentException($"'{name}' is not a colour of the circles palette ({string.Join(", ", Palette.Select(c => c.Name))})");

    /// <summary>The outline on the plain background, [1, 3, size, size] in [−1, 1].</summary>
    public static HostTensor RenderSource(CircleSample sample)
    {
        double halfWidth = Math.Max(0.75, sample.Size / 64.0);
        return Render(sample.Size, (x, y) =>
            Math.Abs(Math.Sqrt((x - sample.CentreX) * (x - sample.CentreX) + (y - sample.CentreY) * (y - sample.CentreY)) - sample.Radius) <= halfWidth
                ? Outline : PlainBackground);
    }

    /// <summary>The filled circle on the named background.</summary>
    public static HostTensor RenderTarget(CircleSample sample)
    {
        var fill = Colour(sample.Fill);
        var background = Colour(sample.Background);
        return Render(sample.Size, (x, y) => Inside(sample, x, y, 1.0) ? fill : background);
    }

    /// <summary>Whether a point lies within <paramref name="radiusFactor"/> times the circle's radius.</summary>
    public static bool Inside(CircleSample sample, double x, double y, double radiusFactor)
    {
        double dx = x - sample.CentreX, dy = y - sample.CentreY, r = sample.Radius * radiusFactor;
        return dx * dx + dy * dy <= r * r;
    }

    /// <summary>
    /// Whether an edit painted what the caption names: the mean colour well inside the circle (0.7 of its radius) and
    /// well outside it (beyond 1.3) are each nearest, in RGB, to the named palette colour. The margins keep
    /// anti-aliased and slightly misplaced edges from deciding the score.
    /// </summary>
    public static (bool Fill, bool Background) ScoreColours(HostTensor result, CircleSample sample)
    {
        var inside = ImageMetrics.MeanColour(result, (y, x) => Inside(sample, x + 0.5, y + 0.5, 0.7));
        var outside = ImageMetrics.MeanColour(result, (y, x) => !Inside(sample, x + 0.5, y + 0.5, 1.3));
        return (inside is { } i && Nearest(i).Name == sample.Fill, outside is { } o && Nearest(o).Name == sample.Background);
    }

    /// <summary>How many of several edits got the fill, the background and both colours right (<see cref="ScoreColours"/>).</summary>
    public sealed class ColourTally
    {
        public int Fill { get; private set; }
        public int Background { get; private set; }
        public int Both { get; private set; }

        public void Add(HostTensor edit, CircleSample sample)
        {
            var (fill, background) = ScoreColours(edit, sample);
            Fill += fill ? 1 : 0;
            Background += background ? 1 : 0;
            Both += fill && background ? 1 : 0;
        }
    }

    /// <summary>The palette colour nearest to an RGB colour (8-bit levels), by Euclidean distance.</summary>
    public static NamedColour Nearest((double R, double G, double B) colour) =>
        Palette.MinBy(c => (c.R - colour.R) * (c.R - colour.R) + (c.G - colour.G) * (c.G - colour.G) + (c.B - colour.B) * (c.B - colour.B))!;

    /// <summary>Writes DIR/source, DIR/target, DIR/captions (the layout train reads) and DIR/circles.json.</summary>
    public static void WriteSplit(string directory, IReadOnlyList<CircleSample> samples)
    {
        foreach (string folder in new[] { "source", "target", "captions" }) Directory.CreateDirectory(Path.Combine(directory, folder));
        foreach (var sample in samples)
        {
            ImageFile.SaveRgb(RenderSource(sample), Path.Combine(directory, "source", sample.Name + ".png"));
            ImageFile.SaveRgb(RenderTarget(sample), Path.Combine(directory, "target", sample.Name + ".png"));
            File.WriteAllText(Path.Combine(directory, "captions", sample.Name + ".txt"), sample.Caption + "\n");
        }
        File.WriteAllText(Path.Combine(directory, MetadataFile), JsonSerializer.Serialize(samples, JsonOptions));
    }

    /// <summary>The samples of a split written by <see cref="WriteSplit"/>.</summary>
    public static IReadOnlyList<CircleSample> ReadSplit(string directory)
    {
        string path = Path.Combine(directory, MetadataFile);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} is missing: scoring needs a split written by 'influx-cli dataset circles'");
        try
        {
            return JsonSerializer.Deserialize<List<CircleSample>>(File.ReadAllText(path), JsonOptions)
                   ?? throw new InvalidDataException($"{path} holds no samples");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not a circles metadata file: {e.Message}");
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>Each pixel's colour is the average over a 4×4 grid of sub-pixel points, so edges are anti-aliased.</summary>
    internal static HostTensor Render(int size, Func<double, double, NamedColour> colourAt) => Render(size, size, colourAt);

    /// <inheritdoc cref="Render(int, Func{double, double, NamedColour})"/>
    internal static HostTensor Render(int width, int height, Func<double, double, NamedColour> colourAt)
    {
        int plane = width * height;
        var image = new HostTensor(1, 3, height, width);
        for (int py = 0; py < height; py++)
            for (int px = 0; px < width; px++)
            {
                double r = 0, g = 0, b = 0;
                for (int sy = 0; sy < Supersampling; sy++)
                    for (int sx = 0; sx < Supersampling; sx++)
                    {
                        var colour = colourAt(px + (sx + 0.5) / Supersampling, py + (sy + 0.5) / Supersampling);
                        r += colour.R;
                        g += colour.G;
                        b += colour.B;
                    }
                const double samples = Supersampling * Supersampling;
                int i = py * width + px;
                image.Data[i] = (float)(r / samples / 127.5 - 1);
                image.Data[plane + i] = (float)(g / samples / 127.5 - 1);
                image.Data[2 * plane + i] = (float)(b / samples / 127.5 - 1);
            }
        return image;
    }
}
