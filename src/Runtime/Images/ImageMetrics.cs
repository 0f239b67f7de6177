using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Images;

/// <summary>
/// Full-reference image quality of an edit against its target, both [1, 3, H, W] in [−1, 1] (as <see cref="ImageFile"/>
/// loads them) and measured on the [0, 1] scale, so the figures match the usual tools' data range of 1.
/// </summary>
public static class ImageMetrics
{
    /// <summary>Peak signal-to-noise ratio in dB over all channels: 10·log10(1 / MSE); +∞ for identical images.</summary>
    public static double Psnr(HostTensor result, HostTensor target) => Psnr(result, target, null)!.Value;

    /// <summary>
    /// The PSNR over the pixels <paramref name="region"/> (one flag per pixel, row-major; null: all) marks, every
    /// channel of each; null when it marks none.
    /// </summary>
    public static double? Psnr(HostTensor result, HostTensor target, bool[]? region)
    {
        RequireSameRgb(result, target);
        int plane = result.Shape[2] * result.Shape[3];
        if (region != null && region.Length != plane)
            throw new ArgumentException($"the region has {region.Length} pixels but the images {plane}; give one flag per pixel");
        double sum = 0;
        long count = 0;
        for (int i = 0; i < result.Data.Length; i++)
        {
            if (region != null && !region[i % plane]) continue;
            double d = (result.Data[i] - (double)target.Data[i]) / 2;
            sum += d * d;
            count++;
        }
        if (count == 0) return null;
        double mse = sum / count;
        return mse == 0 ? double.PositiveInfinity : 10 * Math.Log10(1 / mse);
    }

    /// <summary>
    /// The pixels an edit changes: where <paramref name="before"/> and <paramref name="after"/> differ by more than
    /// <paramref name="threshold"/> (on the [0, 1] scale) in any channel. The default, 1/32 (8 levels of 255), ignores
    /// resampling and compression noise.
    /// </summary>
    public static bool[] ChangedPixels(HostTensor before, HostTensor after, double threshold = 1.0 / 32)
    {
        RequireSameRgb(before, after);
        int plane = before.Shape[2] * before.Shape[3];
        var changed = new bool[plane];
        for (int i = 0; i < before.Data.Length; i++)
            if (Math.Abs(before.Data[i] - (double)after.Data[i]) / 2 > threshold) changed[i % plane] = true;
        return changed;
    }

    /// <summary>
    /// Structural similarity (Wang, Bovik, Sheikh and Simoncelli 2004) per channel, averaged: local statistics under an
    /// 11×11 Gaussian window of σ 1.5 (the paper's), K1 = 0.01, K2 = 0.03, data range 1, windows wholly inside the
    /// image ("valid"). Images smaller than the window use a window of their own smaller side, so tiny test
    /// images still get a score.
    /// </summary>
    public static double Ssim(HostTensor result, HostTensor target)
    {
        RequireSameRgb(result, target);
        int height = result.Shape[2], width = result.Shape[3];
        int window = Math.Min(11, Math.Min(height, width));
        double[] weights = GaussianWindow(window, 1.5);
        const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
        int plane = height * width;
        double total = 0;
        int count = 0;
        for (int channel = 0; channel < 3; channel++)
        {
            int offset = channel * plane;
            for (int top = 0; top + window <= height; top++)
                for (int left = 0; left + window <= width; left++)
                {
                    double meanX = 0, meanY = 0, xx = 0, yy = 0, xy = 0;
                    for (int dy = 0; dy < window; dy++)
                        for (int dx = 0; dx < window; dx++)
                        {
                            double w = weights[dy] * weights[dx];
                            int i = offset + (top + dy) * width + left + dx;
                            double x = (result.Data[i] + 1) / 2, y = (target.Data[i] + 1) / 2;
                            meanX += w * x;
                            meanY += w * y;
                            xx += w * x * x;
                            yy += w * y * y;
                            xy += w * x * y;
                        }
                    double varX = xx - meanX * meanX, varY = yy - meanY * meanY, cov = xy - meanX * meanY;
                    total += (2 * meanX * meanY + c1) * (2 * cov + c2) /
                             ((meanX * meanX + meanY * meanY + c1) * (varX + varY + c2));
                    count++;
                }
        }
        return total / count;
    }

    /// <summary>Mean colour of the pixels where <paramref name="inside"/> holds, each channel in [0, 255]; null when none.</summary>
    public static (double R, double G, double B)? MeanColour(HostTensor image, Func<int, int, bool> inside)
    {
        RequireRgb(image, "the image");
        int height = image.Shape[2], width = image.Shape[3], plane = height * width;
        double r = 0, g = 0, b = 0;
        long count = 0;
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                if (!inside(y, x)) continue;
                int i = y * width + x;
                r += image.Data[i];
                g += image.Data[plane + i];
                b += image.Data[2 * plane + i];
                count++;
            }
        if (count == 0) return null;
        static double ToLevel(double v) => (v + 1) * 127.5;
        return (ToLevel(r / count), ToLevel(g / count), ToLevel(b / count));
    }

    private static double[] GaussianWindow(int size, double sigma)
    {
        var weights = new double[size];
        double centre = (size - 1) / 2.0, sum = 0;
        for (int i = 0; i < size; i++)
        {
            weights[i] = Math.Exp(-(i - centre) * (i - centre) / (2 * sigma * sigma));
            sum += weights[i];
        }
        for (int i = 0; i < size; i++) weights[i] /= sum;
        return weights;
    }

    private static void RequireSameRgb(HostTensor result, HostTensor target)
    {
        RequireRgb(result, "the result");
        RequireRgb(target, "the target");
        if (!result.Shape.SequenceEqual(target.Shape))
            throw new ArgumentException(
                $"the result is {HostTensor.FormatShape(result.Shape)} but the target {HostTensor.FormatShape(target.Shape)}; compare images of one size");
    }

    private static void RequireRgb(HostTensor image, string what)
    {
        if (image.Rank != 4 || image.Shape[0] != 1 || image.Shape[1] != 3)
            throw new ArgumentException($"{what} must be an RGB image [1, 3, H, W]; got {HostTensor.FormatShape(image.Shape)}");
    }
}
