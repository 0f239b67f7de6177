using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Training;

/// <summary>A training size: sides multiples of 16 (one packed latent token per 16×16 pixels).</summary>
public readonly record struct Bucket(int Width, int Height)
{
    public override string ToString() => $"{Width}×{Height}";
}

/// <summary>
/// Aspect-ratio buckets at a resolution R: every width w (multiple of 16, from R/2 to 2R) with the tallest height
/// (multiple of 16) that keeps w·h ≤ R², when that height also lies in [R/2, 2R]. Images keep roughly their shape
/// and every bucket costs about the same as an R×R square. With <see cref="NoUpscale"/> (kohya's bucket_no_upscale) an
/// image of at most R² pixels keeps its own size instead, its sides rounded down to multiples of 16.
/// </summary>
public sealed class AspectBuckets
{
    public const int Step = 16;

    public AspectBuckets(int resolution, bool noUpscale = false)
    {
        NoUpscale = noUpscale;
        if (resolution < 2 * Step || resolution % Step != 0)
            throw new ArgumentOutOfRangeException(nameof(resolution), resolution, $"the training resolution must be a multiple of {Step}, at least {2 * Step}");
        Resolution = resolution;
        long area = (long)resolution * resolution;
        int smallest = Math.Max(Step, resolution / 2 / Step * Step), largest = 2 * resolution;
        var buckets = new List<Bucket>();
        for (int width = smallest; width <= largest; width += Step)
        {
            int height = (int)(area / width / Step * Step);
            if (height >= smallest && height <= largest) buckets.Add(new Bucket(width, height));
        }
        Buckets = buckets;
    }

    public int Resolution { get; }
    public IReadOnlyList<Bucket> Buckets { get; }

    /// <summary>Images no larger than the resolution's area are trained at their own size rather than scaled up.</summary>
    public bool NoUpscale { get; }

    /// <summary>
    /// The bucket whose aspect ratio is nearest the image's (in log ratio, so 2:1 and 1:2 are equally far from 1:1); under
    /// <see cref="NoUpscale"/> an image of at most R² pixels gets its own size, sides rounded down to multiples of 16.
    /// </summary>
    public Bucket Assign(int width, int height)
    {
        if (NoUpscale && (long)width * height <= (long)Resolution * Resolution && width >= Step && height >= Step)
            return new Bucket(width / Step * Step, height / Step * Step);
        double aspect = Math.Log((double)width / height);
        return Buckets.MinBy(b => Math.Abs(Math.Log((double)b.Width / b.Height) - aspect));
    }

    /// <summary>
    /// The size of each half of a diptych [w | w] × h whose long side is the resolution, as the seed resizes its
    /// diptychs (resize_long_edge: 512 gives 512×256, each half 256×256); sides rounded down to multiples of 16.
    /// </summary>
    public Bucket DiptychHalf(int width, int height)
    {
        double scale = (double)Resolution / Math.Max(2L * width, height);
        static int Side(double length) => Math.Max(Step, (int)(length / Step) * Step);
        return new Bucket(Side(width * scale), Side(height * scale));
    }

    /// <summary>Scales [1, C, H, W] (bicubic) so it covers the bucket, then crops the centre to the bucket's size.</summary>
    public static HostTensor Fit(HostTensor image, Bucket bucket)
    {
        int height = image.Shape[2], width = image.Shape[3];
        if (height == bucket.Height && width == bucket.Width) return image;
        double scale = Math.Max((double)bucket.Width / width, (double)bucket.Height / height);
        int scaledWidth = Math.Max(bucket.Width, (int)Math.Round(width * scale));
        int scaledHeight = Math.Max(bucket.Height, (int)Math.Round(height * scale));
        var scaled = scaledWidth == width && scaledHeight == height ? image : Resample.Bicubic(image, scaledHeight, scaledWidth);
        return ImageSizing.Crop(scaled, (scaledHeight - bucket.Height) / 2, (scaledWidth - bucket.Width) / 2, bucket.Height, bucket.Width);
    }
}
