using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>
/// FLUX's token layout (spec §4): a latent is cut into 2×2 patches, one token per patch, tokens row-major;
/// the mask enters at pixel resolution, every 8×8 pixel cell folded into 64 channels and then packed the same way.
/// </summary>
public static class LatentPacking
{
    /// <summary>
    /// [B, C, 2h, 2w] → [B, h·w, 4C]: token r·w + c, feature ch·4 + dy·2 + dx
    /// (einops "b c (h ph) (w pw) -> b (h w) (c ph pw)").
    /// </summary>
    public static HostTensor Pack(HostTensor latent)
    {
        RequireRank4(latent, "a latent to pack");
        int batch = latent.Shape[0], channels = latent.Shape[1], height = latent.Shape[2], width = latent.Shape[3];
        if (height % 2 != 0 || width % 2 != 0)
            throw new ArgumentException($"a latent to pack needs even height and width; got {HostTensor.FormatShape(latent.Shape)}");
        int h = height / 2, w = width / 2, features = 4 * channels;
        var packed = new HostTensor(batch, h * w, features);
        for (int b = 0; b < batch; b++)
            for (int ch = 0; ch < channels; ch++)
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++)
                    {
                        int token = (y / 2) * w + x / 2;
                        int feature = ch * 4 + (y % 2) * 2 + x % 2;
                        packed.Data[((long)b * h * w + token) * features + feature] =
                            latent.Data[(((long)b * channels + ch) * height + y) * width + x];
                    }
        return packed;
    }

    /// <summary>The inverse of <see cref="Pack"/>: [B, h·w, 4C] → [B, C, 2h, 2w] for a latent of the given height and width.</summary>
    public static HostTensor Unpack(HostTensor packed, int latentHeight, int latentWidth)
    {
        if (packed.Rank != 3)
            throw new ArgumentException($"packed tokens must be [B, L, F]; got {HostTensor.FormatShape(packed.Shape)}");
        if (latentHeight % 2 != 0 || latentWidth % 2 != 0)
            throw new ArgumentException($"a packed latent has even sides; {latentWidth}×{latentHeight} is not one");
        int batch = packed.Shape[0], tokens = packed.Shape[1], features = packed.Shape[2];
        int h = latentHeight / 2, w = latentWidth / 2;
        if (tokens != h * w || features % 4 != 0)
            throw new ArgumentException(
                $"packed tokens {HostTensor.FormatShape(packed.Shape)} do not unpack to a {latentWidth}×{latentHeight} latent " +
                $"(that needs {h * w} tokens and a multiple of 4 features)");
        int channels = features / 4;
        var latent = new HostTensor(batch, channels, latentHeight, latentWidth);
        for (int b = 0; b < batch; b++)
            for (int ch = 0; ch < channels; ch++)
                for (int y = 0; y < latentHeight; y++)
                    for (int x = 0; x < latentWidth; x++)
                    {
                        int token = (y / 2) * w + x / 2;
                        int feature = ch * 4 + (y % 2) * 2 + x % 2;
                        latent.Data[(((long)b * channels + ch) * latentHeight + y) * latentWidth + x] =
                            packed.Data[((long)b * h * w + token) * features + feature];
                    }
        return latent;
    }

    /// <summary>
    /// A pixel mask [B, 1, H, W] → [B, (H/16)·(W/16), 256]: every 8×8 pixel cell becomes 64 channels
    /// (channel py·8 + px, "b (h ph) (w pw) -> b (ph pw) h w"), then packed 2×2, so feature (py·8 + px)·4 + dy·2 + dx.
    /// No pooling: the model sees every mask pixel.
    /// </summary>
    public static HostTensor PackMask(HostTensor mask)
    {
        RequireRank4(mask, "a mask to pack");
        if (mask.Shape[1] != 1)
            throw new ArgumentException($"a mask has one channel; got {HostTensor.FormatShape(mask.Shape)}");
        int batch = mask.Shape[0], height = mask.Shape[2], width = mask.Shape[3];
        if (height % 16 != 0 || width % 16 != 0)
            throw new ArgumentException($"a mask to pack needs sides that are multiples of 16; got {width}×{height}");
        int cellRows = height / 8, cellColumns = width / 8;
        var cells = new HostTensor(batch, 64, cellRows, cellColumns);
        for (int b = 0; b < batch; b++)
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++)
                {
                    int channel = (y % 8) * 8 + x % 8;
                    cells.Data[(((long)b * 64 + channel) * cellRows + y / 8) * cellColumns + x / 8] =
                        mask.Data[((long)b * height + y) * width + x];
                }
        return Pack(cells);
    }

    /// <summary>Position ids of the packed tokens: [B, h·w, 3] = (0, row, column), the RoPE axes of the image stream.</summary>
    public static HostTensor ImageIds(int packedHeight, int packedWidth, int batch = 1)
    {
        if (packedHeight < 1 || packedWidth < 1)
            throw new ArgumentException($"an image token grid needs at least one token; got {packedWidth}×{packedHeight}");
        int tokens = packedHeight * packedWidth;
        var ids = new HostTensor(batch, tokens, 3);
        for (int b = 0; b < batch; b++)
            for (int token = 0; token < tokens; token++)
            {
                long row = ((long)b * tokens + token) * 3;
                ids.Data[row + 1] = token / packedWidth;
                ids.Data[row + 2] = token % packedWidth;
            }
        return ids;
    }

    /// <summary>Concatenates [B, L, F1] and [B, L, F2] along features → [B, L, F1 + F2].</summary>
    public static HostTensor ConcatFeatures(HostTensor first, HostTensor second)
    {
        if (first.Rank != 3 || second.Rank != 3 || first.Shape[0] != second.Shape[0] || first.Shape[1] != second.Shape[1])
            throw new ArgumentException(
                $"cannot join {HostTensor.FormatShape(first.Shape)} and {HostTensor.FormatShape(second.Shape)} along features: both must be [B, L, F] with the same B and L");
        int rows = first.Shape[0] * first.Shape[1], a = first.Shape[2], b = second.Shape[2];
        var joined = new HostTensor(first.Shape[0], first.Shape[1], a + b);
        for (int row = 0; row < rows; row++)
        {
            Array.Copy(first.Data, (long)row * a, joined.Data, (long)row * (a + b), a);
            Array.Copy(second.Data, (long)row * b, joined.Data, (long)row * (a + b) + a, b);
        }
        return joined;
    }

    private static void RequireRank4(HostTensor tensor, string what)
    {
        if (tensor.Rank != 4)
            throw new ArgumentException($"{what} must be [B, C, H, W]; got {HostTensor.FormatShape(tensor.Shape)}");
    }
}
