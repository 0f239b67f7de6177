using System.Globalization;
using System.Runtime.CompilerServices;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>
/// Whether, and in what tiles, the autoencoder encodes and decodes a large image. An image with a side longer than
/// <see cref="TilePixels"/> runs in overlapping square tiles of at most that size, blended linearly across each overlap
/// (as diffusers' enable_tiling does): the peak memory of the autoencoder's full-resolution activations becomes a
/// tile's instead of the image's. GroupNorm statistics and the mid-block attention then see one tile at a time, so a
/// tiled result is an approximation of the whole-image pass; an image that fits one tile runs as a whole, exactly.
/// </summary>
/// <param name="TilePixels">The longest tile side in pixels; 0: never tile.</param>
public sealed record VaeTiling(int TilePixels)
{
    public const string OptionName = "vae-tile";
    public const int DefaultTilePixels = 512;

    /// <summary>Below this a tile's edge effects (zero padding of every convolution) reach most of it.</summary>
    public const int MinimumTilePixels = 64;

    public static readonly VaeTiling Default = new(DefaultTilePixels);
    public static readonly VaeTiling Off = new(0);

    public bool Enabled => TilePixels > 0;

    /// <summary>The --vae-tile value: a side in pixels, or "off"; null gives the default.</summary>
    public static VaeTiling Parse(string? text)
    {
        if (text == null) return Default;
        if (string.Equals(text.Trim(), "off", StringComparison.OrdinalIgnoreCase)) return Off;
        if (!int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pixels) || pixels < MinimumTilePixels)
            throw new ArgumentException(
                $"--{OptionName} '{text}' is not a tile side: give a whole number of pixels of at least {MinimumTilePixels} (default {DefaultTilePixels}) or 'off'");
        return new VaeTiling(pixels);
    }

    /// <summary>The most pixels the autoencoder holds at full resolution at once for an image of <paramref name="pixels"/>.</summary>
    public long PeakPixels(long pixels) => Enabled ? Math.Min(pixels, (long)TilePixels * TilePixels) : pixels;

    public override string ToString() => Enabled ? TilePixels.ToString(CultureInfo.InvariantCulture) : "off";
}

/// <summary>One tile along one axis: where it starts and how long it is, in latent units.</summary>
public sealed record TileSpan(int Start, int Length);

/// <summary>Where the tiles of one image go, in latent units.</summary>
/// <param name="Downscale">Pixels per latent position along each side, as the model's decode measured it.</param>
/// <param name="Tile">The tile side in latent units.</param>
/// <param name="Overlap">The least overlap of two neighbouring tiles in latent units.</param>
public sealed record VaeTilePlan(int Downscale, int Tile, int Overlap, IReadOnlyList<TileSpan> Rows, IReadOnlyList<TileSpan> Columns)
{
    public bool IsTiled => Rows.Count > 1 || Columns.Count > 1;

    /// <summary>A log line: how many tiles of which size for an image of the plan's size.</summary>
    public string Describe() =>
        $"{Columns.Count}×{Rows.Count} tiles of at most {Tile * Downscale} px ({Tile} latent), overlapping by at least {Overlap * Downscale} px";
}

/// <summary>
/// The autoencoder's encode and decode in overlapping tiles (see <see cref="VaeTiling"/>). The arithmetic is in latent
/// units; the downscale between latent and image is measured from the model (one decode of a single latent position)
/// rather than assumed.
/// </summary>
public static class VaeTiles
{
    private static readonly ConditionalWeakTable<CompiledModel, StrongBox<int>> Downscales = new();

    /// <summary>Where the tiles go for a latent of <paramref name="latentHeight"/>×<paramref name="latentWidth"/> (tiling enabled).</summary>
    public static VaeTilePlan Plan(CompiledModel vae, VaeTiling tiling, int latentHeight, int latentWidth)
    {
        if (!tiling.Enabled) throw new ArgumentException("tiling is off: there is no tile plan");
        int downscale = Downscale(vae);
        int tile = tiling.TilePixels / downscale;
        if (tile < 4)
            throw new ArgumentException(
                $"--{VaeTiling.OptionName} {tiling.TilePixels} is under 4 latent positions of {vae.Info.Name} (which downscales by {downscale}): give at least {4 * downscale}");
        // A quarter of the tile overlaps each neighbour, diffusers' default.
        int overlap = Math.Max(1, tile / 4);
        return new VaeTilePlan(downscale, tile, overlap, Spans(latentHeight, tile, overlap), Spans(latentWidth, tile, overlap));
    }

    /// <summary>
    /// Tiles of length <paramref name="tile"/> covering [0, <paramref name="extent"/>): the fewest whose neighbours overlap
    /// by at least <paramref name="overlap"/>, spread evenly with the last ending at the extent; one span when the extent fits.
    /// </summary>
    public static IReadOnlyList<TileSpan> Spans(int extent, int tile, int overlap)
    {
        if (extent < 1 || tile < 1 || overlap < 0 || overlap >= tile)
            throw new ArgumentException($"no tiling of {extent} positions by tiles of {tile} overlapping by {overlap}");
        if (extent <= tile) return [new TileSpan(0, extent)];
        int count = (extent - overlap + (tile - overlap) - 1) / (tile - overlap);
        var spans = new TileSpan[count];
        for (int i = 0; i < count; i++)
            spans[i] = new TileSpan((int)Math.Round((double)i * (extent - tile) / (count - 1), MidpointRounding.AwayFromZero), tile);
        return spans;
    }

    /// <summary>
    /// Each span's weight at each of its <paramref name="scale"/>·Length positions (spans scaled by <paramref name="scale"/>):
    /// rising linearly across the overlap with the previous span, falling across the overlap with the next, 1 elsewhere,
    /// then divided by their sum at each position so that the weights of every position sum to 1 however the spans overlap.
    /// </summary>
    public static float[][] BlendWeights(IReadOnlyList<TileSpan> spans, int scale)
    {
        int extent = spans.Max(s => s.Start + s.Length) * scale;
        var weights = new float[spans.Count][];
        var total = new double[extent];
        for (int i = 0; i < spans.Count; i++)
        {
            int start = spans[i].Start * scale, length = spans[i].Length * scale;
            int overlapBefore = i > 0 ? Math.Max(0, (spans[i - 1].Start + spans[i - 1].Length) * scale - start) : 0;
            int overlapAfter = i < spans.Count - 1 ? Math.Max(0, start + length - spans[i + 1].Start * scale) : 0;
            var w = weights[i] = new float[length];
            for (int x = 0; x < length; x++)
            {
                // Sampled at pixel centres, so two complementary ramps sum to exactly 1 and no position has weight 0.
                double rise = x < overlapBefore ? (x + 0.5) / overlapBefore : 1;
                double fall = length - x <= overlapAfter ? (length - x - 0.5) / overlapAfter : 1;
                w[x] = (float)Math.Min(rise, fall);
                total[start + x] += w[x];
            }
        }
        for (int i = 0; i < spans.Count; i++)
        {
            int start = spans[i].Start * scale;
            for (int x = 0; x < weights[i].Length; x++) weights[i][x] = (float)(weights[i][x] / total[start + x]);
        }
        return weights;
    }

    /// <summary>Latent [B, C, h, w] → image [B, C', f·h, f·w], tile by tile where the plan tiles.</summary>
    public static HostTensor Decode(CompiledModel vae, HostTensor latent, VaeTiling tiling)
    {
        if (!tiling.Enabled) return VaeCodec.Decode(vae, latent);
        RequireImageLike(latent, "the latent");
        var plan = Plan(vae, tiling, latent.Shape[2], latent.Shape[3]);
        return plan.IsTiled ? Tiled(latent, plan, 1, plan.Downscale, tile => VaeCodec.Decode(vae, tile)) : VaeCodec.Decode(vae, latent);
    }

    /// <summary>Image [B, C, f·h, f·w] → latent [B, C', h, w], tile by tile where the plan tiles.</summary>
    public static HostTensor Encode(CompiledModel vae, HostTensor image, VaeTiling tiling)
    {
        if (!tiling.Enabled) return VaeCodec.Encode(vae, image);
        RequireImageLike(image, "the image");
        int downscale = Downscale(vae);
        if (image.Shape[2] % downscale != 0 || image.Shape[3] % downscale != 0)
            throw new ArgumentException(
                $"the image is {image.Shape[3]}×{image.Shape[2]}; {vae.Info.Name} encodes sides that are multiples of {downscale}");
        var plan = Plan(vae, tiling, image.Shape[2] / downscale, image.Shape[3] / downscale);
        return plan.IsTiled ? Tiled(image, plan, plan.Downscale, 1, tile => VaeCodec.Encode(vae, tile)) : VaeCodec.Encode(vae, image);
    }

    /// <summary>
    /// Pixels per latent position: the side of what the model decodes from one latent position. Measured once per model,
    /// so any autoencoder of the family tiles correctly whatever its number of levels.
    /// </summary>
    public static int Downscale(CompiledModel vae) => Downscales.GetValue(vae, model =>
    {
        if (!model.Info.Params.TryGetValue("z_channels", out string? text) || !int.TryParse(text, CultureInfo.InvariantCulture, out int channels) || channels < 1)
            throw new ArgumentException($"{model.Info.Name} (schemas/{model.Info.SchemaFile}) has no z_channels parameter: its latent's channel count is needed to tile");
        var image = VaeCodec.Decode(model, new HostTensor(1, channels, 1, 1));
        if (image.Rank != 4 || image.Shape[2] != image.Shape[3] || image.Shape[2] < 1)
            throw new InvalidOperationException($"{model.Info.Name} decodes one latent position to {HostTensor.FormatShape(image.Shape)}, not a square of pixels");
        return new StrongBox<int>(image.Shape[2]);
    }).Value;

    /// <summary>
    /// Runs <paramref name="pass"/> on each tile of <paramref name="input"/> (spans × <paramref name="inputScale"/>) and adds
    /// each result, weighted, into the output (spans × <paramref name="outputScale"/>), which is made at the first tile's channels.
    /// </summary>
    public static HostTensor Tiled(HostTensor input, VaeTilePlan plan, int inputScale, int outputScale, Func<HostTensor, HostTensor> pass)
    {
        var rowWeights = BlendWeights(plan.Rows, outputScale);
        var columnWeights = BlendWeights(plan.Columns, outputScale);
        int batch = input.Shape[0];
        int height = input.Shape[2] / inputScale * outputScale, width = input.Shape[3] / inputScale * outputScale;
        HostTensor? output = null;
        for (int r = 0; r < plan.Rows.Count; r++)
            for (int c = 0; c < plan.Columns.Count; c++)
            {
                var (row, column) = (plan.Rows[r], plan.Columns[c]);
                var tile = pass(ImageSizing.Crop(input, row.Start * inputScale, column.Start * inputScale, row.Length * inputScale, column.Length * inputScale));
                int tileHeight = row.Length * outputScale, tileWidth = column.Length * outputScale;
                if (tile.Rank != 4 || tile.Shape[0] != batch || tile.Shape[2] != tileHeight || tile.Shape[3] != tileWidth)
                    throw new InvalidOperationException(
                        $"a tile gave {HostTensor.FormatShape(tile.Shape)} where the measured downscale of {plan.Downscale} makes [{batch}, C, {tileHeight}, {tileWidth}]");
                output ??= new HostTensor(batch, tile.Shape[1], height, width);
                Accumulate(output, tile, row.Start * outputScale, column.Start * outputScale, rowWeights[r], columnWeights[c]);
            }
        return output!;
    }

    private static void Accumulate(HostTensor output, HostTensor tile, int top, int left, float[] rowWeights, float[] columnWeights)
    {
        int planes = tile.Shape[0] * tile.Shape[1], tileHeight = tile.Shape[2], tileWidth = tile.Shape[3];
        int height = output.Shape[2], width = output.Shape[3];
        for (int plane = 0; plane < planes; plane++)
            for (int y = 0; y < tileHeight; y++)
            {
                var source = tile.Data.AsSpan((plane * tileHeight + y) * tileWidth, tileWidth);
                var target = output.Data.AsSpan((plane * height + top + y) * width + left, tileWidth);
                float rowWeight = rowWeights[y];
                for (int x = 0; x < tileWidth; x++) target[x] += rowWeight * columnWeights[x] * source[x];
            }
    }

    private static void RequireImageLike(HostTensor tensor, string what)
    {
        if (tensor.Rank != 4 || tensor.Shape[2] < 1 || tensor.Shape[3] < 1)
            throw new ArgumentException($"{what} is {HostTensor.FormatShape(tensor.Shape)}; the autoencoder takes [B, C, H, W]");
    }
}
