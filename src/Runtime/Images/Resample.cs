using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Images;

/// <summary>
/// Separable bicubic resampling of float NCHW tensors, computed the way PIL's Image.resize(BICUBIC) computes it
/// (Keys kernel with a = −0.5, pixel centres at i + 0.5, the kernel widened by the scale when shrinking so that
/// downscaling averages instead of aliasing, weights normalised per output pixel). On floats, so no clamping or
/// 8-bit rounding happens between the two passes.
/// </summary>
public static class Resample
{
    private const double KeysA = -0.5;
    private const double KernelSupport = 2.0;

    public static HostTensor Bicubic(HostTensor image, int height, int width)
    {
        if (image.Rank != 4)
            throw new ArgumentException($"bicubic resampling takes [B, C, H, W]; got {HostTensor.FormatShape(image.Shape)}");
        if (height <= 0 || width <= 0)
            throw new ArgumentException($"cannot resample to {width}×{height}");
        int planes = image.Shape[0] * image.Shape[1], sourceHeight = image.Shape[2], sourceWidth = image.Shape[3];
        var horizontal = Weights(sourceWidth, width);
        var vertical = Weights(sourceHeight, height);

        // Rows first (source height × target width), then columns, as PIL orders the passes.
        var rowsDone = new float[planes * sourceHeight * width];
        Parallel.For(0, planes * sourceHeight, row =>
        {
            int source = row * sourceWidth, target = row * width;
            for (int x = 0; x < width; x++)
            {
                var (first, taps) = horizontal[x];
                double sum = 0;
                for (int k = 0; k < taps.Length; k++) sum += taps[k] * image.Data[source + first + k];
                rowsDone[target + x] = (float)sum;
            }
        });
        var result = new HostTensor(image.Shape[0], image.Shape[1], height, width);
        Parallel.For(0, planes, plane =>
        {
            for (int y = 0; y < height; y++)
            {
                var (first, taps) = vertical[y];
                for (int x = 0; x < width; x++)
                {
                    double sum = 0;
                    for (int k = 0; k < taps.Length; k++) sum += taps[k] * rowsDone[(plane * sourceHeight + first + k) * width + x];
                    result.Data[(plane * height + y) * width + x] = (float)sum;
                }
            }
        });
        return result;
    }

    /// <summary>For each output index: the first input index it reads and the normalised weights from there on.</summary>
    private static (int First, double[] Taps)[] Weights(int inputSize, int outputSize)
    {
        double scale = (double)inputSize / outputSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = KernelSupport * filterScale;
        var weights = new (int, double[])[outputSize];
        for (int i = 0; i < outputSize; i++)
        {
            double center = (i + 0.5) * scale;
            int first = Math.Max((int)(center - support + 0.5), 0);
            int last = Math.Min((int)(center + support + 0.5), inputSize);
            var taps = new double[last - first];
            double total = 0;
            for (int k = 0; k < taps.Length; k++)
            {
                taps[k] = Keys((first + k - center + 0.5) / filterScale);
                total += taps[k];
            }
            if (total != 0)
                for (int k = 0; k < taps.Length; k++) taps[k] /= total;
            weights[i] = (first, taps);
        }
        return weights;
    }

    private static double Keys(double x)
    {
        x = Math.Abs(x);
        if (x < 1) return ((KeysA + 2) * x - (KeysA + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * KeysA;
        return 0;
    }
}
