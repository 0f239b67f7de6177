using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Images;

/// <summary>How an image whose sides are not multiples of 16 is brought to a size the latent grid accepts.</summary>
public enum SizingMode
{
    /// <summary>Bicubic resize to the nearest multiples of 16 (what diffusers does): the whole picture, slightly stretched.</summary>
    Resize,

    /// <summary>Pad right and bottom up to the next multiples of 16 by repeating the edge pixels; cropped off again on output.</summary>
    Pad,
}

/// <summary>What <see cref="ImageSizing.ToMultipleOf16"/> did, so the caller can tell the user and undo it.</summary>
public sealed record SizingPlan(int OriginalHeight, int OriginalWidth, int Height, int Width, SizingMode Mode)
{
    public bool ChangesSize => Height != OriginalHeight || Width != OriginalWidth;

    /// <summary>One line for the user, e.g. "resized 1000×750 to 1008×752 (sides must be multiples of 16)".</summary>
    public string Describe() => !ChangesSize
        ? $"{OriginalWidth}×{OriginalHeight} is used as it is"
        : $"{(Mode == SizingMode.Resize ? "resized" : "padded")} {OriginalWidth}×{OriginalHeight} to {Width}×{Height} " +
          "(sides must be multiples of 16); the output is brought back to " + $"{OriginalWidth}×{OriginalHeight}";
}

/// <summary>
/// Brings NCHW images to sides that are multiples of 16 (one packed latent token per 16×16 pixels) and back.
/// Works on any channel count, so an image and its mask go through the same plan.
/// </summary>
public static class ImageSizing
{
    /// <summary>One packed latent token covers 16×16 pixels: the smallest image that means anything to the model.</summary>
    public const int MinimumSide = 16;

    public static SizingPlan Plan(int height, int width, SizingMode mode, string what = "the image")
    {
        if (height < MinimumSide || width < MinimumSide)
            throw new ArgumentException(
                $"{what} is {width}×{height} pixels; the model needs at least {MinimumSide}×{MinimumSide} (one latent token is 16×16 pixels)");
        int target(int side) => mode == SizingMode.Pad
            ? (side + 15) / 16 * 16
            : Math.Max(16, (int)Math.Round(side / 16.0, MidpointRounding.AwayFromZero) * 16);
        return new SizingPlan(height, width, target(height), target(width), mode);
    }

    /// <summary>Plans and applies the change in one call; <paramref name="what"/> names the image in errors.</summary>
    public static (HostTensor Image, SizingPlan Plan) ToMultipleOf16(HostTensor image, SizingMode mode, string what = "the image")
    {
        CheckNchw(image, what);
        var plan = Plan(image.Shape[2], image.Shape[3], mode, what);
        return (Apply(image, plan), plan);
    }

    /// <summary>Applies a plan made for another image of the same size (the mask of an image).</summary>
    public static HostTensor Apply(HostTensor image, SizingPlan plan)
    {
        CheckNchw(image, "the image");
        if (image.Shape[2] != plan.OriginalHeight || image.Shape[3] != plan.OriginalWidth)
            throw new ArgumentException(
                $"the plan is for {plan.OriginalWidth}×{plan.OriginalHeight} images, this one is {image.Shape[3]}×{image.Shape[2]}");
        if (!plan.ChangesSize) return image;
        return plan.Mode == SizingMode.Pad
            ? PadWithEdge(image, plan.Height, plan.Width)
            : Resample.Bicubic(image, plan.Height, plan.Width);
    }

    /// <summary>Undoes a plan on an output of the planned size: crops the padding or resizes back.</summary>
    public static HostTensor Restore(HostTensor image, SizingPlan plan)
    {
        CheckNchw(image, "the output");
        if (image.Shape[2] != plan.Height || image.Shape[3] != plan.Width)
            throw new ArgumentException(
                $"the output is {image.Shape[3]}×{image.Shape[2]}, the plan made it {plan.Width}×{plan.Height}");
        if (!plan.ChangesSize) return image;
        return plan.Mode == SizingMode.Pad
            ? Crop(image, 0, 0, plan.OriginalHeight, plan.OriginalWidth)
            : Resample.Bicubic(image, plan.OriginalHeight, plan.OriginalWidth);
    }

    /// <summary>The window [top, top + height) × [left, left + width) of every channel.</summary>
    public static HostTensor Crop(HostTensor image, int top, int left, int height, int width)
    {
        CheckNchw(image, "the image");
        int batch = image.Shape[0], channels = image.Shape[1], sourceHeight = image.Shape[2], sourceWidth = image.Shape[3];
        if (top < 0 || left < 0 || top + height > sourceHeight || left + width > sourceWidth || height <= 0 || width <= 0)
            throw new ArgumentException($"crop {width}×{height} at ({left}, {top}) does not fit in {sourceWidth}×{sourceHeight}");
        var result = new HostTensor(batch, channels, height, width);
        for (int plane = 0; plane < batch * channels; plane++)
            for (int y = 0; y < height; y++)
                Array.Copy(image.Data, (plane * sourceHeight + top + y) * sourceWidth + left,
                    result.Data, (plane * height + y) * width, width);
        return result;
    }

    private static HostTensor PadWithEdge(HostTensor image, int height, int width)
    {
        int batch = image.Shape[0], channels = image.Shape[1], sourceHeight = image.Shape[2], sourceWidth = image.Shape[3];
        var result = new HostTensor(batch, channels, height, width);
        for (int plane = 0; plane < batch * channels; plane++)
            for (int y = 0; y < height; y++)
            {
                int sourceRow = (plane * sourceHeight + Math.Min(y, sourceHeight - 1)) * sourceWidth;
                int row = (plane * height + y) * width;
                Array.Copy(image.Data, sourceRow, result.Data, row, sourceWidth);
                Array.Fill(result.Data, image.Data[sourceRow + sourceWidth - 1], row + sourceWidth, width - sourceWidth);
            }
        return result;
    }

    private static void CheckNchw(HostTensor image, string what)
    {
        if (image.Rank != 4)
            throw new ArgumentException($"{what} must be an NCHW tensor [B, C, H, W]; got {HostTensor.FormatShape(image.Shape)}");
    }
}
