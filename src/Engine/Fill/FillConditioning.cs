using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>How an edit is posed to a FLUX Fill model.</summary>
public enum EditMethod
{
    /// <summary>Inpainting: the masked region of the image is regenerated (BFL's prepare_fill).</summary>
    Fill,

    /// <summary>
    /// Method (b): the whole source is the conditioning latent, not zeroed, under an all-white mask; the model
    /// regenerates the whole picture as the edit.
    /// </summary>
    Channel,

    /// <summary>
    /// Method (a): a diptych [source | target] twice as wide, the right half masked; the model paints the edited
    /// image beside the source, and the right half is the result.
    /// </summary>
    Concat,
}

/// <summary>
/// The conditioning the transformer sees besides the noisy latent: img_cond = cat(packed latent [64],
/// packed mask [256]) → [1, Li, 320], with the ids of the Li tokens and the latent grid they pack.
/// </summary>
public sealed record FillCondition(HostTensor ImgCond, HostTensor ImgIds, int LatentHeight, int LatentWidth)
{
    public int Tokens => ImgCond.Shape[1];
}

/// <summary>
/// Builds the conditioning of each <see cref="EditMethod"/> from images in [−1, 1] ([1, 3, H, W], sides multiples
/// of 16) as the golden methods case pins it. <c>encode</c> is the VAE's encode: [1, 3, H, W] → [1, 16, H/8, W/8],
/// scaled and shifted.
/// </summary>
public static class FillConditioning
{
    public static FillCondition Build(EditMethod method, HostTensor image, HostTensor? mask, Func<HostTensor, HostTensor> encode) =>
        method switch
        {
            EditMethod.Fill => ForFill(image, mask ?? throw new ArgumentException("the fill method needs a mask (1 = region to generate)"), encode),
            EditMethod.Channel => ForChannel(image, encode),
            EditMethod.Concat => ForConcat(image, encode),
            _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown edit method"),
        };

    /// <summary>BFL's prepare_fill: encode(image·(1 − mask)) with the user's (soft) mask.</summary>
    public static FillCondition ForFill(HostTensor image, HostTensor mask, Func<HostTensor, HostTensor> encode)
    {
        RequireImage(image, "the image");
        if (mask.Rank != 4 || mask.Shape[0] != 1 || mask.Shape[1] != 1 || mask.Shape[2] != image.Shape[2] || mask.Shape[3] != image.Shape[3])
            throw new ArgumentException(
                $"the mask is {HostTensor.FormatShape(mask.Shape)}; it must be [1, 1, {image.Shape[2]}, {image.Shape[3]}], the image's size");
        return Condition(MaskOut(image, mask), mask, encode);
    }

    /// <summary>
    /// Method (b): the source is NOT zeroed and the mask is all white (everything may change). <paramref name="maskValue"/>
    /// 0 gives the all-zero mask the seed's code trains under (its <c>Image.new("L", size, 1)</c> thresholded at 0.5),
    /// for measuring that defect; edits always use all white.
    /// </summary>
    public static FillCondition ForChannel(HostTensor source, Func<HostTensor, HostTensor> encode, float maskValue = 1f)
    {
        RequireImage(source, "the source");
        var uniform = new HostTensor(1, 1, source.Shape[2], source.Shape[3]);
        Array.Fill(uniform.Data, maskValue);
        return Condition(source, uniform, encode);
    }

    /// <summary>
    /// Method (a): the diptych [source | blank] with the right half masked. The right half is zeroed by the mask
    /// before encoding, so what stands there (blank here, the target in training) does not reach the conditioning.
    /// </summary>
    public static FillCondition ForConcat(HostTensor source, Func<HostTensor, HostTensor> encode)
    {
        RequireImage(source, "the source");
        var diptych = Diptych(source, null);
        var mask = RightHalfMask(source.Shape[2], source.Shape[3]);
        return Condition(MaskOut(diptych, mask), mask, encode);
    }

    /// <summary>
    /// Method (a) the other way round, as the seed trains without --mask_only_right half of the time: the diptych
    /// [source | target] with the left half masked, so the model learns to restore the source beside its edit.
    /// </summary>
    public static FillCondition ForConcatReversed(HostTensor source, HostTensor target, Func<HostTensor, HostTensor> encode)
    {
        var diptych = Diptych(source, target);
        var mask = RightHalfMask(source.Shape[2], source.Shape[3]);
        for (int i = 0; i < mask.Data.Length; i++) mask.Data[i] = 1f - mask.Data[i];
        return Condition(MaskOut(diptych, mask), mask, encode);
    }

    /// <summary>
    /// The clean latent x0 a training step denoises towards, packed: encode(target) for fill and channel,
    /// encode([source | target]) for concat.
    /// </summary>
    public static HostTensor TrainingTarget(EditMethod method, HostTensor source, HostTensor target, Func<HostTensor, HostTensor> encode)
    {
        RequireImage(source, "the source");
        RequireImage(target, "the target");
        if (source.Shape[2] != target.Shape[2] || source.Shape[3] != target.Shape[3])
            throw new ArgumentException(
                $"the target is {target.Shape[3]}×{target.Shape[2]} but the source is {source.Shape[3]}×{source.Shape[2]}; a training pair has one size");
        var image = method == EditMethod.Concat ? Diptych(source, target) : target;
        return LatentPacking.Pack(Encode(image, encode));
    }

    /// <summary>[left | right] side by side, width 2W; a missing right half is 0 (mid-gray in [−1, 1]).</summary>
    public static HostTensor Diptych(HostTensor left, HostTensor? right)
    {
        RequireImage(left, "the left image");
        int channels = left.Shape[1], height = left.Shape[2], width = left.Shape[3];
        if (right != null && !right.Shape.AsSpan().SequenceEqual(left.Shape))
            throw new ArgumentException($"the halves of a diptych must have one shape; got {HostTensor.FormatShape(left.Shape)} and {HostTensor.FormatShape(right.Shape)}");
        var diptych = new HostTensor(1, channels, height, 2 * width);
        for (int row = 0; row < channels * height; row++)
        {
            Array.Copy(left.Data, row * width, diptych.Data, row * 2 * width, width);
            if (right != null) Array.Copy(right.Data, row * width, diptych.Data, row * 2 * width + width, width);
        }
        return diptych;
    }

    /// <summary>[1, 1, H, 2W]: 0 on the left half (keep), 1 on the right half (generate).</summary>
    public static HostTensor RightHalfMask(int height, int halfWidth)
    {
        var mask = new HostTensor(1, 1, height, 2 * halfWidth);
        for (int y = 0; y < height; y++)
            Array.Fill(mask.Data, 1f, y * 2 * halfWidth + halfWidth, halfWidth);
        return mask;
    }

    private static FillCondition Condition(HostTensor imageToEncode, HostTensor mask, Func<HostTensor, HostTensor> encode)
    {
        var latent = Encode(imageToEncode, encode);
        var imgCond = LatentPacking.ConcatFeatures(LatentPacking.Pack(latent), LatentPacking.PackMask(mask));
        int latentHeight = latent.Shape[2], latentWidth = latent.Shape[3];
        return new FillCondition(imgCond, LatentPacking.ImageIds(latentHeight / 2, latentWidth / 2), latentHeight, latentWidth);
    }

    private static HostTensor Encode(HostTensor image, Func<HostTensor, HostTensor> encode)
    {
        var latent = encode(image);
        int[] expected = { 1, 16, image.Shape[2] / 8, image.Shape[3] / 8 };
        if (!latent.Shape.AsSpan().SequenceEqual(expected))
            throw new InvalidDataException(
                $"the VAE encoded a {HostTensor.FormatShape(image.Shape)} image to {HostTensor.FormatShape(latent.Shape)}; FLUX Fill needs {HostTensor.FormatShape(expected)}");
        return latent;
    }

    /// <summary>image·(1 − mask), the mask broadcast over the colour channels.</summary>
    private static HostTensor MaskOut(HostTensor image, HostTensor mask)
    {
        int channels = image.Shape[1], plane = image.Shape[2] * image.Shape[3];
        var result = new HostTensor((int[])image.Shape.Clone());
        for (int c = 0; c < channels; c++)
            for (int i = 0; i < plane; i++)
                result.Data[c * plane + i] = image.Data[c * plane + i] * (1f - mask.Data[i]);
        return result;
    }

    private static void RequireImage(HostTensor image, string what)
    {
        if (image.Rank != 4 || image.Shape[0] != 1 || image.Shape[1] != 3)
            throw new ArgumentException($"{what} must be an RGB image [1, 3, H, W]; got {HostTensor.FormatShape(image.Shape)}");
        if (image.Shape[2] % 16 != 0 || image.Shape[3] % 16 != 0)
            throw new ArgumentException($"{what} is {image.Shape[3]}×{image.Shape[2]}; its sides must be multiples of 16 (see ImageSizing)");
    }
}
