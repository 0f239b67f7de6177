using System.Numerics;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>The autoencoder's image ops on channels-last [B, H·W, C] views (see <see cref="IBackend.Conv2d"/>).</summary>
public sealed unsafe partial class CpuBackend
{
    public void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding)
    {
        CpuTensor w = AsCpu(weight, nameof(weight));
        CpuTensor? b = bias is null ? null : AsCpu(bias, nameof(bias));
        ConvShape shape = ConvShape.Validate(y, x, height, width, w.Shape, b?.Length, stride, padding);
        RequireInside(x, nameof(x));
        RequireInside(y, nameof(y));
        if (y.ElementCount == 0) return;
        ConvShape.RequireDisjoint(y, x, nameof(x));
        CpuConv.Run(shape, y, x, w, b is null ? null : b.Pointer, CpuGemm.BestKernel);
    }

    public void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps)
    {
        RequireSameShape(y, x, nameof(x));
        int channels = x.Cols;
        if (groups <= 0 || channels % groups != 0)
            throw new ArgumentException($"{channels} channels do not split into {groups} groups", nameof(groups));
        CpuTensor? s = scale is null ? null : AsCpu(scale, nameof(scale));
        CpuTensor? b = bias is null ? null : AsCpu(bias, nameof(bias));
        if (s is not null && s.Length != channels) throw new ArgumentException($"scale {s} does not have {channels} elements", nameof(scale));
        if (b is not null && b.Length != channels) throw new ArgumentException($"bias {b} does not have {channels} elements", nameof(bias));
        ConvShape.RequireUnitColumnRows(x, nameof(x));
        ConvShape.RequireUnitColumnRows(y, nameof(y));
        if (x.ElementCount == 0) return;
        CpuGroupNorm.Run(y, x, groups, s is null ? null : s.Pointer, b is null ? null : b.Pointer, eps);
    }

    public void UpsampleNearest2x(View y, View x, int height, int width)
    {
        ConvShape.ValidateUpsample2x(y, x, height, width);
        RequireInside(x, nameof(x));
        RequireInside(y, nameof(y));
        if (y.ElementCount == 0) return;
        ConvShape.RequireDisjoint(y, x, nameof(x));

        float* xBase = Base(x), yBase = Base(y);
        int channels = x.Cols, outWidth = 2 * width;
        long xRow = x.RowStride, xBatch = x.BatchStride, yRow = y.RowStride, yBatch = y.BatchStride;
        long bytes = (long)channels * sizeof(float);
        bool yDense = yRow == channels;
        // One task item per input image row: it writes output rows 2·iy and 2·iy + 1.
        CpuParallel.ForRanges(x.Batch * height, 4L * width * channels, (start, end) =>
        {
            for (int item = start; item < end; item++)
            {
                int b = item / height, iy = item - b * height;
                float* source = xBase + b * xBatch + (long)iy * width * xRow;
                float* even = yBase + b * yBatch + (long)(2 * iy) * outWidth * yRow;
                float* odd = even + outWidth * yRow;
                for (int ix = 0; ix < width; ix++)
                {
                    float* pixel = source + ix * xRow;
                    Buffer.MemoryCopy(pixel, even + 2 * ix * yRow, bytes, bytes);
                    Buffer.MemoryCopy(pixel, even + (2 * ix + 1) * yRow, bytes, bytes);
                }
                if (yDense)
                    Buffer.MemoryCopy(even, odd, outWidth * bytes, outWidth * bytes);
                else
                    for (int ox = 0; ox < outWidth; ox++)
                        Buffer.MemoryCopy(even + ox * yRow, odd + ox * yRow, bytes, bytes);
            }
        });
    }
}

/// <summary>
/// GroupNorm over channels-last rows in three passes, each split over row ranges on all cores: per-channel sums in
/// float64 (vectorised: float32 lanes widened to float64), then per-channel sums of squared deviations from the
/// group mean (two-pass, so |mean| ≫ std does not cancel), then y = (x − μ)·(rstd·scale) + bias in float64, rounded
/// once. Row ranges, not groups, are split: a group's channels are a few floats of every row, so a task per group
/// would re-read every cache line once per group.
/// </summary>
internal static unsafe class CpuGroupNorm
{
    public static void Run(View y, View x, int groups, float* scale, float* bias, float eps)
    {
        int channels = x.Cols, rows = x.Rows;
        var mean = new double[channels];
        var rstd = new double[channels];
        var factor = new double[channels];
        var shift = new double[channels];
        for (int b = 0; b < x.Batch; b++)
        {
            float* xImage = CpuBackend.Base(x) + b * x.BatchStride;
            float* yImage = CpuBackend.Base(y) + b * y.BatchStride;
            long xRow = x.RowStride, yRow = y.RowStride;

            Statistics(xImage, xRow, rows, channels, groups, eps, mean, rstd);
            for (int c = 0; c < channels; c++)
            {
                factor[c] = rstd[c] * (scale == null ? 1.0 : scale[c]);
                shift[c] = bias == null ? 0.0 : bias[c];
            }
            CpuParallel.ForRanges(rows, 2L * channels, (start, end) =>
            {
                fixed (double* m = mean, f = factor, s = shift)
                    for (int r = start; r < end; r++) Normalize(yImage + r * yRow, xImage + r * xRow, m, f, s, channels);
            });
        }
    }

    /// <summary>Per channel, its group's mean and 1/sqrt(biased variance + eps) over every pixel of one image, in float64.</summary>
    private static void Statistics(float* image, long rowStride, int rows, int channels, int groups, float eps, double[] mean, double[] rstd)
    {
        int groupSize = channels / groups;
        double count = (double)rows * groupSize;
        double[] sums = ChannelSums(image, rowStride, rows, channels, null);
        for (int g = 0; g < groups; g++)
        {
            double total = 0;
            for (int c = g * groupSize; c < (g + 1) * groupSize; c++) total += sums[c];
            for (int c = g * groupSize; c < (g + 1) * groupSize; c++) mean[c] = total / count;
        }
        double[] squares = ChannelSums(image, rowStride, rows, channels, mean);
        for (int g = 0; g < groups; g++)
        {
            double total = 0;
            for (int c = g * groupSize; c < (g + 1) * groupSize; c++) total += squares[c];
            double inverseStd = 1.0 / Math.Sqrt(total / count + eps);
            for (int c = g * groupSize; c < (g + 1) * groupSize; c++) rstd[c] = inverseStd;
        }
    }

    /// <summary>
    /// The backward pass per sample: the forward's statistics recomputed the same way, then per-channel float64 sums of
    /// dy and dy·(x − μ) over the pixels, which give both the parameter gradients and each group's two means that dx
    /// needs: dx = rstd·(scale·dy − mean(g) − x̂·mean(g·x̂)), g = scale·dy.
    /// </summary>
    public static void Backward(View? dx, float* dScale, float* dBias, View dy, View x, int groups, float* scale, float eps)
    {
        int channels = x.Cols, groupSize = channels / groups, rows = x.Rows;
        double count = (double)rows * groupSize;
        var mean = new double[channels];
        var rstd = new double[channels];
        var factor = new double[channels];
        var offset = new double[channels];
        var gxFactor = new double[channels];
        for (int b = 0; b < x.Batch; b++)
        {
            float* xImage = CpuBackend.Base(x) + b * x.BatchStride;
            float* dyImage = CpuBackend.Base(dy) + b * dy.BatchStride;
            long xRow = x.RowStride, dyRow = dy.RowStride;
            Statistics(xImage, xRow, rows, channels, groups, eps, mean, rstd);

            // [Σ dy | Σ dy·(x − μ)] per channel, one vector of 2C.
            double[] sums2 = CpuParallel.SumRanges(rows, 2L * channels, 2 * channels, (start, end, partial) =>
            {
                for (int r = start; r < end; r++)
                {
                    float* xr = xImage + r * xRow, dyr = dyImage + r * dyRow;
                    for (int c = 0; c < channels; c++)
                    {
                        double g = dyr[c];
                        partial[c] += g;
                        partial[channels + c] += g * (xr[c] - mean[c]);
                    }
                }
            });
            var dySum = sums2.AsSpan(0, channels).ToArray();
            var dyCentred = sums2.AsSpan(channels, channels).ToArray();
            for (int c = 0; c < channels; c++)
            {
                if (dScale != null) dScale[c] = (float)(dScale[c] + dyCentred[c] * rstd[c]);
                if (dBias != null) dBias[c] = (float)(dBias[c] + dySum[c]);
            }
            if (dx is not View target) continue;

            // dx = rstd·scale·dy − rstd·mean(g) − (x − μ)·rstd²·mean(g·x̂), per channel as factor·dy + offset + gxFactor·(x − μ).
            for (int g = 0; g < groups; g++)
            {
                double meanG = 0, meanGXhat = 0;
                for (int c = g * groupSize; c < (g + 1) * groupSize; c++)
                {
                    double s = scale == null ? 1.0 : scale[c];
                    meanG += s * dySum[c];
                    meanGXhat += s * dyCentred[c] * rstd[c];
                }
                meanG /= count;
                meanGXhat /= count;
                for (int c = g * groupSize; c < (g + 1) * groupSize; c++)
                {
                    factor[c] = rstd[c] * (scale == null ? 1.0 : scale[c]);
                    offset[c] = -rstd[c] * meanG;
                    gxFactor[c] = -rstd[c] * rstd[c] * meanGXhat;
                }
            }
            float* dxImage = CpuBackend.Base(target) + b * target.BatchStride;
            long dxRow = target.RowStride;
            CpuParallel.ForRanges(rows, 2L * channels, (start, end) =>
            {
                for (int r = start; r < end; r++)
                {
                    float* xr = xImage + r * xRow, dyr = dyImage + r * dyRow, dxr = dxImage + r * dxRow;
                    for (int c = 0; c < channels; c++)
                        dxr[c] = (float)(factor[c] * dyr[c] + offset[c] + gxFactor[c] * (xr[c] - mean[c]));
                }
            });
        }
    }

    /// <summary>Σ_rows x[r, c] (center null) or Σ_rows (x[r, c] − center[c])², per channel, in float64.</summary>
    private static double[] ChannelSums(float* image, long rowStride, int rows, int channels, double[]? center)
    {
        return CpuParallel.SumRanges(rows, channels, channels, (start, end, partial) =>
        {
            fixed (double* acc = partial, mid = center)
                for (int r = start; r < end; r++) Accumulate(acc, image + r * rowStride, mid, channels);
        });
    }

    private static void Accumulate(double* acc, float* x, double* center, int n)
    {
        int c = 0;
        int w = Vector<float>.Count, half = Vector<double>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            for (; c + w <= n; c += w)
            {
                Vector.Widen(*(Vector<float>*)(x + c), out Vector<double> low, out Vector<double> high);
                if (center != null)
                {
                    low -= *(Vector<double>*)(center + c);
                    high -= *(Vector<double>*)(center + c + half);
                    low *= low;
                    high *= high;
                }
                *(Vector<double>*)(acc + c) += low;
                *(Vector<double>*)(acc + c + half) += high;
            }
        }
        for (; c < n; c++)
        {
            double v = x[c];
            if (center != null)
            {
                v -= center[c];
                v *= v;
            }
            acc[c] += v;
        }
    }

    private static void Normalize(float* y, float* x, double* mean, double* factor, double* shift, int n)
    {
        int c = 0;
        int w = Vector<float>.Count, half = Vector<double>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            for (; c + w <= n; c += w)
            {
                Vector.Widen(*(Vector<float>*)(x + c), out Vector<double> low, out Vector<double> high);
                low = (low - *(Vector<double>*)(mean + c)) * *(Vector<double>*)(factor + c) + *(Vector<double>*)(shift + c);
                high = (high - *(Vector<double>*)(mean + c + half)) * *(Vector<double>*)(factor + c + half)
                    + *(Vector<double>*)(shift + c + half);
                *(Vector<float>*)(y + c) = Vector.Narrow(low, high);
            }
        }
        for (; c < n; c++) y[c] = (float)((x[c] - mean[c]) * factor[c] + shift[c]);
    }
}
