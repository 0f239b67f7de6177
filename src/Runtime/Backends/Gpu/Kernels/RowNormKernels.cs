using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// Row reductions, one group per row (LayerNorm) or per normalised column group (RmsNorm). The group size is a
/// launch parameter (a power of two up to <see cref="MaxGroupSize"/>): large on a GPU, small on the CPU
/// simulator where every thread is an OS thread. Each thread touches only the columns col ≡ thread (mod group
/// size), in every pass, so writing y in place of x is safe.
/// </summary>
public static class RowNormKernels
{
    public const int MaxGroupSize = 256;

    /// <summary>Grid: one group per flat row.</summary>
    public static void LayerNorm(int cols, float eps,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        var partials = SharedMemory.Allocate<float>(MaxGroupSize);
        long flatRow = Grid.IdxX;
        int thread = Group.IdxX;
        int threads = Group.DimX;

        float sum = 0f;
        for (int col = thread; col < cols; col += threads)
            sum += xData[x.IndexOf(flatRow, col)];
        float mean = GroupSum(partials, sum) / cols;

        // Two passes over the row (the second hits cache) rather than E[x²]−E[x]², which cancels badly when
        // |mean| ≫ std, as on the residual stream.
        float squares = 0f;
        for (int col = thread; col < cols; col += threads)
        {
            float d = xData[x.IndexOf(flatRow, col)] - mean;
            squares += d * d;
        }
        float variance = GroupSum(partials, squares) / cols;
        float inverseStd = 1f / XMath.Sqrt(variance + eps);

        for (int col = thread; col < cols; col += threads)
        {
            long source = x.IndexOf(flatRow, col);
            yData[y.IndexOf(flatRow, col)] = (xData[source] - mean) * inverseStd;
        }
    }

    /// <summary>Grid: one group per (flat row, column group); groupsPerRow = cols / groupSize.</summary>
    public static void RmsNorm(int groupSize, int groupsPerRow, float eps,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData, ArrayView<float> scale)
    {
        var partials = SharedMemory.Allocate<float>(MaxGroupSize);
        long flatRow = Grid.IdxX / groupsPerRow;
        int firstCol = (Grid.IdxX - (int)(flatRow * groupsPerRow)) * groupSize;
        int thread = Group.IdxX;
        int threads = Group.DimX;

        float squares = 0f;
        for (int i = thread; i < groupSize; i += threads)
        {
            float v = xData[x.IndexOf(flatRow, firstCol + i)];
            squares += v * v;
        }
        float inverseRms = 1f / XMath.Sqrt(GroupSum(partials, squares) / groupSize + eps);

        for (int i = thread; i < groupSize; i += threads)
        {
            float v = xData[x.IndexOf(flatRow, firstCol + i)];
            yData[y.IndexOf(flatRow, firstCol + i)] = v * inverseRms * scale[i];
        }
    }

    /// <summary>
    /// Sum of one value per thread, returned to every thread. Tree reduction over a power-of-two group; the final
    /// barrier keeps a following call from overwriting partials[0] before every thread has read it.
    /// </summary>
    internal static float GroupSum(ArrayView<float> partials, float value)
    {
        int thread = Group.IdxX;
        partials[thread] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half >>= 1)
        {
            if (thread < half)
                partials[thread] += partials[thread + half];
            Group.Barrier();
        }
        float total = partials[0];
        Group.Barrier();
        return total;
    }
}
