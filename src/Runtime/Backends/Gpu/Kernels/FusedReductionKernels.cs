using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// The per-sample sums over tokens that fused backward groups leave to separate launches (modulate's Σ dy and Σ dy·x,
/// the gate's Σ dy·x): partial sums per chunk of rows in row order, then <see cref="BackwardKernels.FinishColumnSums"/>
/// adds the chunks in order, so the result does not depend on scheduling.
/// </summary>
public static class FusedReductionKernels
{
    /// <summary>
    /// One thread per (sample, chunk, column): Σ over the chunk's rows of dy (times factor where
    /// <paramref name="withFactor"/> is 1), in the layout FinishColumnSums reads (the unfused backward's partials).
    /// </summary>
    public static void ColumnSumPartials(Index1D index, ColumnChunks s, StridedMatrix dy, ArrayView<float> dyData,
        StridedMatrix factor, ArrayView<float> factorData, int withFactor, ArrayView<float> partials)
    {
        int col = index % s.Cols;
        int rest = index / s.Cols;
        int chunk = rest % s.Chunks;
        int output = rest / s.Chunks;
        int first = chunk * s.RowsPerChunk;
        int end = XMath.Min(first + s.RowsPerChunk, s.RowsPerOutput);
        long flatRow0 = (long)output * s.RowsPerOutput;
        float sum = 0f;
        for (int r = first; r < end; r++)
        {
            long flatRow = flatRow0 + r;
            float g = dyData[dy.IndexOf(flatRow, col)];
            sum += withFactor != 0 ? g * factorData[factor.IndexOf(flatRow, col)] : g;
        }
        partials[index] = sum;
    }
}
