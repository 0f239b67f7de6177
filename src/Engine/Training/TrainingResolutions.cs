using System.Globalization;

namespace InFluxEdit.Training;

/// <summary>
/// The resolutions a run trains at (<c>--resolution 256,512,768</c>, as the seed's train_influxedit.py takes them):
/// every pair is cached at each one, and each batch is trained at one of them, drawn uniformly from the run's seeded
/// stream (the seed's collate_fn draws with Python's unseeded random.choice). One resolution is the plain case, so a
/// single size converts implicitly.
/// </summary>
public sealed record TrainingResolutions
{
    public TrainingResolutions(IReadOnlyList<int> sizes) => Sizes = sizes.ToArray();

    /// <summary>In the order given; the order matters to the draws (index i is drawn as i).</summary>
    public IReadOnlyList<int> Sizes { get; }

    public static implicit operator TrainingResolutions(int resolution) => new([resolution]);

    /// <summary>Comma-separated sizes, checked (see <see cref="Validated"/>).</summary>
    public static TrainingResolutions Parse(string text)
    {
        var sizes = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries))
            sizes.Add(int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int size) ? size
                : throw new ArgumentException($"--resolution '{text}': '{part}' is not a whole number of pixels; give one size or several separated by commas, e.g. 256,512,768"));
        return new TrainingResolutions(sizes).Validated();
    }

    /// <summary>Itself, once every size is a multiple of 16 of at least 32 and none is given twice.</summary>
    public TrainingResolutions Validated()
    {
        if (Sizes.Count == 0) throw new ArgumentException("--resolution needs at least one size");
        foreach (int size in Sizes)
            if (size < 2 * AspectBuckets.Step || size % AspectBuckets.Step != 0)
                throw new ArgumentException($"--resolution {this}: {size} is not a multiple of {AspectBuckets.Step} of at least {2 * AspectBuckets.Step} (one packed latent token is {AspectBuckets.Step}×{AspectBuckets.Step} pixels)");
        if (Sizes.GroupBy(size => size).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"--resolution {this} gives {twice.Key} twice: give each size once (the draw is uniform over the sizes)");
        return this;
    }

    public bool Equals(TrainingResolutions? other) => other is not null && Sizes.SequenceEqual(other.Sizes);

    public override int GetHashCode() => Sizes.Aggregate(17, HashCode.Combine);

    /// <summary>As the option takes them: 256,512,768.</summary>
    public override string ToString() => string.Join(",", Sizes.Select(size => size.ToString(CultureInfo.InvariantCulture)));
}
