using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The autoencoder's image ops (Conv2d, GroupNorm, UpsampleNearest2x) against float64 references written here from
/// the PyTorch definitions, on any <see cref="IBackend"/>: CpuBackend, the ILGPU simulator, CUDA.
/// Inputs and outputs are views with an offset, a row gap and a batch gap inside larger tensors; the output's
/// backing is filled with a sentinel so a write outside the view is caught.
/// </summary>
public sealed class ImageOpChecks(IBackend backend, int seed = 4321)
{
    private const float Sentinel = -12345f;
    private readonly Random random = new(seed);

    private float[] RandomValues(int length, float scale = 1f, float offset = 0f)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
            values[i] = offset + scale * (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    /// <summary>A [batch, rows, cols] view at offset 7 with a row gap of 3 and a batch gap of 5 (dense when asked).</summary>
    private (View View, float[] Host, DeviceTensor Tensor) Strided(int batch, int rows, int cols, bool dense,
        float scale = 1f, float offset = 0f, bool sentinel = false)
    {
        long rowStride = dense ? cols : cols + 3;
        long batchStride = rows * rowStride + (dense ? 0 : 5);
        long start = dense ? 0 : 7;
        int length = (int)(start + batch * batchStride + (dense ? 0 : 2));
        float[] host = sentinel ? Enumerable.Repeat(Sentinel, length).ToArray() : RandomValues(length, scale, offset);
        var tensor = backend.Upload(new HostTensor([length], host));
        return (new View(tensor, start, batch, rows, cols, batchStride, rowStride), host, tensor);
    }

    private static double At(View view, float[] host, int b, int r, int c) =>
        host[view.Offset + b * view.BatchStride + r * view.RowStride + c];

    /// <summary>The whole backing of y: elements of the view compared to expected, every other element still the sentinel.</summary>
    private void AssertOutput(View y, float[] expectedInView, double absolute, double relative, string what)
    {
        backend.Synchronize();
        var tensor = y.Tensor;
        float[] all = backend.Download(tensor.AsView(), [(int)tensor.Length]).Data;
        var inside = new bool[all.Length];
        int i = 0;
        double worst = 0;
        for (int b = 0; b < y.Batch; b++)
            for (int r = 0; r < y.Rows; r++)
                for (int c = 0; c < y.Cols; c++, i++)
                {
                    long at = y.Offset + b * y.BatchStride + r * y.RowStride + c;
                    inside[at] = true;
                    double error = Math.Abs(all[at] - expectedInView[i]);
                    worst = Math.Max(worst, error);
                    if (!(error <= absolute + relative * Math.Abs(expectedInView[i])))
                        Assert.Fail($"{what}: (b {b}, row {r}, col {c}) is {all[at]}, expected {expectedInView[i]} (error {error:E2})");
                }
        for (int at = 0; at < all.Length; at++)
            if (!inside[at] && all[at] != Sentinel)
                Assert.Fail($"{what}: element {at} outside the output view was overwritten with {all[at]}");
    }

    private static float[] Narrow(double[] values) => Array.ConvertAll(values, v => (float)v);

    // ------------------------------------------------------------------ Conv2d

    public void Conv2d(int batch, int height, int width, int cin, int cout, int kernel, int stride, Padding2d padding,
        bool withBias, DType weightType = DType.F32, bool dense = false, double tolerance = 2e-5)
    {
        int kh = kernel, kw = kernel;
        int outHeight = (height + padding.Top + padding.Bottom - kh) / stride + 1;
        int outWidth = (width + padding.Left + padding.Right - kw) / stride + 1;
        var (x, xHost, xTensor) = Strided(batch, height * width, cin, dense);
        var (y, _, yTensor) = Strided(batch, outHeight * outWidth, cout, dense, sentinel: true);

        float[] weights = RandomValues(cout * cin * kh * kw, scale: 0.5f);
        byte[] raw;
        if (weightType == DType.BF16)
        {
            weights = Array.ConvertAll(weights, GpuOpChecks.BFloat16Round);
            raw = GpuOpChecks.BFloat16Bytes(weights);
        }
        else if (weightType == DType.F16)
        {
            var halves = Array.ConvertAll(weights, v => (Half)v);
            weights = Array.ConvertAll(halves, h => (float)h);
            raw = MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
        }
        else
        {
            raw = MemoryMarshal.AsBytes(weights.AsSpan()).ToArray();
        }
        float[] biasValues = RandomValues(cout);
        using var w = backend.UploadWeight([cout, cin, kh, kw], weightType, raw);
        using var b = withBias ? backend.UploadWeight([cout], DType.F32, MemoryMarshal.AsBytes(biasValues.AsSpan())) : null;

        backend.Conv2d(y, x, height, width, w, b, stride, padding);
        // Twice: the second call runs on a cached repacked weight where the backend keeps one.
        backend.Conv2d(y, x, height, width, w, b, stride, padding);

        var expected = new double[batch * outHeight * outWidth * cout];
        int i = 0;
        for (int n = 0; n < batch; n++)
            for (int oy = 0; oy < outHeight; oy++)
                for (int ox = 0; ox < outWidth; ox++)
                    for (int co = 0; co < cout; co++)
                    {
                        double sum = withBias ? biasValues[co] : 0.0;
                        for (int ci = 0; ci < cin; ci++)
                            for (int ky = 0; ky < kh; ky++)
                                for (int kx = 0; kx < kw; kx++)
                                {
                                    int iy = oy * stride + ky - padding.Top, ix = ox * stride + kx - padding.Left;
                                    if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                                    sum += (double)weights[((co * cin + ci) * kh + ky) * kw + kx] * At(x, xHost, n, iy * width + ix, ci);
                                }
                        expected[i++] = sum;
                    }
        AssertOutput(y, Narrow(expected), tolerance * Math.Sqrt(cin * kh * kw), tolerance,
            $"conv {kh}×{kw}/{stride} {padding} {height}×{width}×{cin}→{cout} {weightType}");
        xTensor.Dispose();
        yTensor.Dispose();
    }

    // ------------------------------------------------------------------ GroupNorm

    public void GroupNorm(int batch, int height, int width, int channels, int groups, bool affine, float offset,
        bool inPlace = false, bool dense = false, double relative = 1e-6, float eps = 1e-6f)
    {
        int rows = height * width;
        var (x, xHost, xTensor) = Strided(batch, rows, channels, dense, scale: 2f, offset: offset);
        float[] scaleValues = RandomValues(channels, 1f, 1f), biasValues = RandomValues(channels);
        using var scale = affine ? backend.UploadWeight([channels], DType.F32, MemoryMarshal.AsBytes(scaleValues.AsSpan())) : null;
        using var bias = affine ? backend.UploadWeight([channels], DType.F32, MemoryMarshal.AsBytes(biasValues.AsSpan())) : null;

        int groupSize = channels / groups;
        var expected = new double[batch * rows * channels];
        for (int n = 0; n < batch; n++)
            for (int g = 0; g < groups; g++)
            {
                double sum = 0;
                for (int r = 0; r < rows; r++)
                    for (int c = g * groupSize; c < (g + 1) * groupSize; c++) sum += At(x, xHost, n, r, c);
                double count = (double)rows * groupSize, mean = sum / count, squares = 0;
                for (int r = 0; r < rows; r++)
                    for (int c = g * groupSize; c < (g + 1) * groupSize; c++)
                    {
                        double d = At(x, xHost, n, r, c) - mean;
                        squares += d * d;
                    }
                double inverseStd = 1.0 / Math.Sqrt(squares / count + eps);
                for (int r = 0; r < rows; r++)
                    for (int c = g * groupSize; c < (g + 1) * groupSize; c++)
                        expected[(n * rows + r) * channels + c] = (At(x, xHost, n, r, c) - mean) * inverseStd
                            * (affine ? scaleValues[c] : 1.0) + (affine ? biasValues[c] : 0.0);
            }

        if (inPlace)
        {
            backend.GroupNorm(x, x, groups, scale, bias, eps);
            backend.Synchronize();
            float[] actual = backend.Download(x, [batch, rows, channels]).Data;
            GpuOpChecks.AssertClose(expected, actual, relative, relative, $"in-place GroupNorm {groups} groups of {groupSize}");
        }
        else
        {
            var (y, _, yTensor) = Strided(batch, rows, channels, dense, sentinel: true);
            backend.GroupNorm(y, x, groups, scale, bias, eps);
            AssertOutput(y, Narrow(expected), relative, relative, $"GroupNorm {groups} groups of {groupSize}, offset {offset}");
            yTensor.Dispose();
        }
        xTensor.Dispose();
    }

    // ------------------------------------------------------------------ upsample

    public void UpsampleNearest2x(int batch, int height, int width, int channels, bool dense = false)
    {
        var (x, xHost, xTensor) = Strided(batch, height * width, channels, dense);
        var (y, _, yTensor) = Strided(batch, 4 * height * width, channels, dense, sentinel: true);
        backend.UpsampleNearest2x(y, x, height, width);
        var expected = new float[batch * 4 * height * width * channels];
        int i = 0;
        for (int n = 0; n < batch; n++)
            for (int oy = 0; oy < 2 * height; oy++)
                for (int ox = 0; ox < 2 * width; ox++)
                    for (int c = 0; c < channels; c++)
                        expected[i++] = (float)At(x, xHost, n, oy / 2 * width + ox / 2, c);
        AssertOutput(y, expected, 0, 0, $"upsample {height}×{width}×{channels}");
        xTensor.Dispose();
        yTensor.Dispose();
    }

    // ------------------------------------------------------------------ rejections

    /// <summary>Overlapping rows, wrong sizes and in-place convs are refused with ArgumentException.</summary>
    public void RejectsWhatItDoesNotSupport()
    {
        using var x = backend.Allocate([1, 12, 4]);
        using var y = backend.Allocate([1, 12, 4]);
        using var big = backend.Allocate([1, 48, 4]);
        using var w = backend.UploadWeight([4, 4, 3, 3], DType.F32, new byte[4 * 4 * 9 * 4]);
        using var w2d = backend.UploadWeight([4, 4], DType.F32, new byte[4 * 4 * 4]);
        var overlapping = new View(x, 0, 1, 12, 4, 48, 2);
        Assert.Throws<ArgumentException>(() => backend.Conv2d(y, overlapping, 3, 4, w, null, 1, Padding2d.Same(1)));
        Assert.Throws<ArgumentException>(() => backend.Conv2d(y, x, 4, 4, w, null, 1, Padding2d.Same(1)));
        Assert.Throws<ArgumentException>(() => backend.Conv2d(y, x, 3, 4, w2d, null, 1, Padding2d.Same(1)));
        Assert.Throws<ArgumentException>(() => backend.Conv2d(y, x, 3, 4, w, null, 1, Padding2d.None)); // y must be 1×2
        Assert.Throws<ArgumentException>(() => backend.Conv2d(x, x, 3, 4, w, null, 1, Padding2d.Same(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.Conv2d(y, x, 3, 4, w, null, 0, Padding2d.Same(1)));
        Assert.Throws<ArgumentException>(() => backend.GroupNorm(y, x, 3, null, null, 1e-6f));
        Assert.Throws<ArgumentException>(() => backend.GroupNorm(y, overlapping, 2, null, null, 1e-6f));
        Assert.Throws<ArgumentException>(() => backend.UpsampleNearest2x(y, x, 3, 4));
        Assert.Throws<ArgumentException>(() => backend.UpsampleNearest2x(big, x, 4, 4));
    }
}
