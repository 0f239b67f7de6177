using InFluxEdit.Fill;

namespace InFluxEdit.Training;

/// <summary>
/// One way of training an editing LoRA that `compare` measures: the method and what it changes against the plain
/// method, and the colour its line has in the validation-loss plot.
/// </summary>
public sealed record CompareVariant(string Name, EditMethod Method, string Description, string Colour, byte R, byte G, byte B)
{
    public bool TrainImgIn { get; init; }

    /// <summary>Channel trained under the all-zero mask the seed's code uses (edits still use all white).</summary>
    public bool SeedZeroMask { get; init; }

    /// <summary>Channel with img_in's gradient building up in the clipping but never applied, as the seed's code leaves it.</summary>
    public bool SeedFrozenImgIn { get; init; }

    /// <summary>Concat with the diptych's long side at the resolution (the seed's), not each half.</summary>
    public bool DiptychResolution { get; init; }

    /// <summary>Put before every caption in training and in the held-out edits.</summary>
    public string? CaptionPrefix { get; init; }
}

/// <summary>The variants `compare --variants` may name.</summary>
public static class CompareVariants
{
    /// <summary>
    /// Every variant, in the table's order. Plain channel never updates img_in either; channel-frozen-img-in adds what
    /// the seed's late requires_grad also did: img_in's gradient, never zeroed, in the clipping's norm.
    /// </summary>
    public static readonly IReadOnlyList<CompareVariant> All =
    [
        new("concat", EditMethod.Concat, "method (a): [source | target] diptych, each half bucketed at --resolution, captions as given", "blue", 31, 119, 180),
        new("concat+prefix", EditMethod.Concat, "concat with the seed's diptych caption prefix, in training and edits", "orange", 255, 127, 14)
            { CaptionPrefix = TrainRecipe.SeedConcatCaptionPrefix },
        new("concat-diptych", EditMethod.Concat, "concat with the diptych's long side at --resolution (each half a quarter of the tokens), edited at that size", "green", 44, 160, 44)
            { DiptychResolution = true },
        new("concat-diptych+prefix", EditMethod.Concat, "both: the seed's own concat condition", "red", 214, 39, 40)
            { DiptychResolution = true, CaptionPrefix = TrainRecipe.SeedConcatCaptionPrefix },
        new("channel", EditMethod.Channel, "method (b): the source unzeroed under an all-white mask; img_in frozen", "purple", 148, 103, 189),
        new("channel-seed-mask", EditMethod.Channel, "channel trained under an all-ZERO mask and edited under all-white, as the seed's code does", "brown", 140, 86, 75)
            { SeedZeroMask = true },
        new("channel-frozen-img-in", EditMethod.Channel, "channel with img_in's gradient piling up in the clipping but never applied, as the seed's code leaves it", "grey", 127, 127, 127)
            { SeedFrozenImgIn = true },
        new("channel+img-in", EditMethod.Channel, "channel with img_in trained in full (what the seed meant to train)", "pink", 227, 119, 194)
            { TrainImgIn = true },
    ];

    public static string Names => string.Join(",", All.Select(v => v.Name));

    /// <summary>The variants a comma-separated list names, in its order; an unknown, repeated or empty list is refused with the valid names.</summary>
    public static IReadOnlyList<CompareVariant> Parse(string text)
    {
        var names = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (names.Length == 0) throw new ArgumentException($"--variants names no variant: give a comma-separated list of {string.Join(", ", All.Select(v => v.Name))}");
        var variants = new List<CompareVariant>();
        foreach (string name in names)
        {
            var variant = All.FirstOrDefault(v => v.Name == name)
                ?? throw new ArgumentException($"unknown variant '{name}' in --variants: the variants are {string.Join(", ", All.Select(v => v.Name))}");
            if (variants.Contains(variant)) throw new ArgumentException($"--variants names '{name}' twice: {text}");
            variants.Add(variant);
        }
        return variants;
    }
}
