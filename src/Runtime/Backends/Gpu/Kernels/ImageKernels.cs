using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>The sizes of one convolution, as kernels see them (one struct: ILGPU launchers take a bounded number of arguments).</summary>
public readonly struct ConvGeometry
{
    public readonly int Height, Width, InChannels, KernelHeight, KernelWidth, Stride, Top, Left, OutWidth, OutPixels;

    public ConvGeometry(int height, int width, int inChannels, int kernelHeight, int kernelWidth, int stride,
        int top, int left, int outWidth, int outPixels)
    {
        Height = height; Width = width; InChannels = inChannels; KernelHeight = kernelHeight; KernelWidth = kernelWidth;
        Stride = stride; Top = top; Left = left; OutWidth = outWidth; OutPixels = outPixels;
    }

    /// <summary>kh·kw·Cin: the columns of an im2col row and of the tap-major weight.</summary>
    public int PatchLength => KernelHeight * KernelWidth * InChannels;
}

/// <summary>The sizes of one GroupNorm: rows (pixels) per batch, channels, channels per group, groups.</summary>
public readonly struct GroupNormShape
{
    public readonly int Rows, Channels, GroupSize, Groups, HasScale, HasBias;

    public GroupNormShape(int rows, int channels, int groups, bool hasScale, bool hasBias)
    {
        Rows = rows; Channels = channels; Groups = groups; GroupSize = channels / groups;
        HasScale = hasScale ? 1 : 0; HasBias = hasBias ? 1 : 0;
    }
}

/// <summary>
/// The autoencoder's image kernels on channels-last [B, H·W, C] views, one thread per output element (implicitly
/// grouped). Conv2d is im2col (<see cref="Im2Col"/>) into a dense scratch matrix followed by the backend's Linear
/// GEMM against the weight reordered tap-major (<see cref="RepackConvWeightFloat32"/>): column (ky·kw + kx)·Cin + ci
/// of both. A thread writes only its own output element, after reading its inputs.
/// </summary>
public static class ImageKernels
{
    /// <summary>
    /// Rows of the im2col matrix [rows, K] for output pixels firstPixel.. of batches firstBatch..: flat index
    /// i = row·K + col; row = localBatch·pixelsPerBatch + pixel offset; col = (ky·kw + kx)·Cin + ci. Zero outside the image.
    /// </summary>
    public static void Im2Col(Index1D index, ConvGeometry g, int pixelsPerBatch, int firstBatch, int firstPixel,
        Elements columns, StridedMatrix x, Elements xData)
    {
        int k = g.PatchLength;
        int row = index / k;
        int col = index - row * k;
        int localBatch = row / pixelsPerBatch;
        int pixel = firstPixel + (row - localBatch * pixelsPerBatch);
        int tap = col / g.InChannels;
        int channel = col - tap * g.InChannels;
        int ky = tap / g.KernelWidth, kx = tap - ky * g.KernelWidth;
        int oy = pixel / g.OutWidth, ox = pixel - oy * g.OutWidth;
        int iy = oy * g.Stride + ky - g.Top, ix = ox * g.Stride + kx - g.Left;
        float value = 0f;
        if (iy >= 0 && iy < g.Height && ix >= 0 && ix < g.Width)
        {
            long flatRow = (long)(firstBatch + localBatch) * (g.Height * g.Width) + iy * g.Width + ix;
            value = xData[x.IndexOf(flatRow, channel)];
        }
        columns[index] = value;
    }

    /// <summary>destination[co, (ky·kw + kx)·Cin + ci] = weight[co, ci, ky, kx] (float32 or bf16 storage); one thread per element.</summary>
    public static void RepackConvWeightFloat32(Index1D index, int inChannels, int kernelHeight, int kernelWidth,
        Elements destination, ArrayView<float> weights) =>
        Repack(index, inChannels, kernelHeight, kernelWidth, destination, new Float32Weights(weights));

    public static void RepackConvWeightBFloat16(Index1D index, int inChannels, int kernelHeight, int kernelWidth,
        Elements destination, ArrayView<ushort> weights) =>
        Repack(index, inChannels, kernelHeight, kernelWidth, destination, new BFloat16Weights(weights));

    public static void RepackConvWeightFloat16(Index1D index, int inChannels, int kernelHeight, int kernelWidth,
        Elements destination, ArrayView<ushort> weights) =>
        Repack(index, inChannels, kernelHeight, kernelWidth, destination, new Float16Weights(weights));

    private static void Repack<TWeights>(Index1D index, int inChannels, int kernelHeight, int kernelWidth,
        Elements destination, TWeights weights)
        where TWeights : struct, IWeightElements
    {
        int taps = kernelHeight * kernelWidth;
        int k = taps * inChannels;
        int co = index / k;
        int col = index - co * k;
        int tap = col / inChannels;
        int ci = col - tap * inChannels;
        destination[index] = weights.Load(((long)co * inChannels + ci) * taps + tap);
    }

    /// <summary>
    /// y[b, Y·2w + X, c] = x[b, (Y/2)·w + X/2, c]; one thread per element of y (flat index over B·4hw rows × cols).
    /// </summary>
    public static void UpsampleNearest2x(Index1D index, int cols, int width, int inPixels,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        long outPixels = 4L * inPixels;
        long batch = flatRow / outPixels;
        int pixel = (int)(flatRow - batch * outPixels);
        int outWidth = 2 * width;
        int oy = pixel / outWidth, ox = pixel - oy * outWidth;
        long source = batch * inPixels + (oy / 2) * width + ox / 2;
        yData[y.IndexOf(flatRow, col)] = xData[x.IndexOf(source, col)];
    }

    /// <summary>
    /// One thread per (batch, group) = index: sums the chunk partials of <see cref="GroupNormKernels.Partials"/>
    /// and writes stats[2·index] = mean, stats[2·index + 1] = 1/sqrt(biased variance + eps), in float64.
    /// </summary>
    public static void GroupNormFinish(Index1D index, int chunks, double count, float eps,
        ArrayView<double> partials, ArrayView<double> stats)
    {
        int pair = index;
        double sum = 0, squares = 0;
        for (int chunk = 0; chunk < chunks; chunk++)
        {
            long at = 2L * ((long)pair * chunks + chunk);
            sum += partials[at];
            squares += partials[at + 1];
        }
        double mean = sum / count;
        // E[x²] − mean² in float64: float32 inputs lose nothing to cancellation unless |mean|/std exceeds ~10⁴.
        double variance = XMath.Max(squares / count - mean * mean, 0.0);
        stats[2L * pair] = mean;
        stats[2L * pair + 1] = 1.0 / XMath.Sqrt(variance + eps);
    }

    /// <summary>y = (x − mean)·rstd·scale[c] + bias[c]; one thread per element; mean and rstd of its (batch, group).</summary>
    public static void GroupNormApply(Index1D index, GroupNormShape s,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        ArrayView<double> stats, ArrayView<float> scale, ArrayView<float> bias)
    {
        long flatRow = index / s.Channels;
        int col = index - (int)(flatRow * s.Channels);
        long batch = flatRow / s.Rows;
        long statsAt = 2L * (batch * s.Groups + col / s.GroupSize);
        float centered = (float)((double)xData[x.IndexOf(flatRow, col)] - stats[statsAt]);
        float value = centered * (float)stats[statsAt + 1];
        if (s.HasScale != 0)
            value *= scale[col];
        if (s.HasBias != 0)
            value += bias[col];
        yData[y.IndexOf(flatRow, col)] = value;
    }
}

/// <summary>GroupNorm's statistics pass: explicitly grouped, a shared-memory reduction in float64.</summary>
public static class GroupNormKernels
{
    public const int MaxGroupSize = 256;

    /// <summary>
    /// Grid (chunks, batch·groups), group ≤ <see cref="MaxGroupSize"/> threads (a power of two). Group (chunk, bg)
    /// sums x and x² over rows [chunk·rowsPerChunk, +rowsPerChunk) and the GroupSize channels of group bg % groups
    /// of batch bg / groups, in float64, into partials[2·(bg·chunks + chunk)] and the element after it.
    /// </summary>
    public static void Partials(GroupNormShape s, int rowsPerChunk, StridedMatrix x, Elements xData,
        ArrayView<double> partials)
    {
        var shared = SharedMemory.Allocate<double>(2 * MaxGroupSize);
        int chunk = Grid.IdxX, chunks = Grid.DimX;
        int bg = Grid.IdxY;
        int batch = bg / s.Groups;
        int firstChannel = (bg - batch * s.Groups) * s.GroupSize;
        int firstRow = chunk * rowsPerChunk;
        int rows = XMath.Min(rowsPerChunk, s.Rows - firstRow);
        int thread = Group.IdxX, threads = Group.DimX;

        double sum = 0, squares = 0;
        int elements = rows < 0 ? 0 : rows * s.GroupSize;
        for (int e = thread; e < elements; e += threads)
        {
            int r = e / s.GroupSize;
            int c = e - r * s.GroupSize;
            double v = xData[x.IndexOf((long)batch * s.Rows + firstRow + r, firstChannel + c)];
            sum += v;
            squares += v * v;
        }
        shared[thread] = sum;
        shared[MaxGroupSize + thread] = squares;
        Group.Barrier();
        for (int half = threads / 2; half > 0; half >>= 1)
        {
            if (thread < half)
            {
                shared[thread] += shared[thread + half];
                shared[MaxGroupSize + thread] += shared[MaxGroupSize + thread + half];
            }
            Group.Barrier();
        }
        if (thread == 0)
        {
            long at = 2L * ((long)bg * chunks + chunk);
            partials[at] = shared[0];
            partials[at + 1] = shared[MaxGroupSize];
        }
    }
}
