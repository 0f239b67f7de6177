using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The sizes <see cref="IlgpuBackend"/> gives its device memory, in one place: how a weight is stored, and how much
/// pooled scratch attention, column sums, convolutions and group norms take. <see cref="MemoryPlanBackend"/> calls the
/// same functions, so a memory plan cannot drift from what the CUDA backend allocates.
/// </summary>
internal static class GpuMemoryPolicy
{
    /// <summary>
    /// How a weight is held: matrices keep 16-bit storage (that is what lets the bf16 model fit); vectors (biases, norm
    /// scales) are tiny and widened so the element-wise kernels need only one element type; everything else is float32.
    /// </summary>
    public static DType WeightStorage(int[] shape, DType dtype) =>
        dtype is DType.BF16 or DType.F16 && shape.Length >= 2 ? dtype : DType.F32;

    /// <summary>
    /// Elements of the scratch a product dequantizes a quantized weight into: the largest quantized weight held so far,
    /// so every product rents the same pool bucket and one buffer is parked between products, not one per weight shape
    /// (the plan of a 12B edit over a quantized base: 0.19 GB less at the pools' peak).
    /// </summary>
    public static long DequantizeScratchLength(long weightLength, long largestQuantizedLength) => Math.Max(weightLength, largestQuantizedLength);

    /// <summary>With weight offloading on, which weights stay in host memory: every non-empty matrix.</summary>
    public static bool Offloads(bool offloading, int[] shape) => offloading && shape.Length >= 2 && HostTensor.ElementCount(shape) > 0;

    /// <summary>Query rows per pass of the cuBLAS attention: as many as fit the scratch budget, at least one.</summary>
    public static int AttentionChunkRows(long budgetBytes, int heads, int keyRows, int queryRows, bool narrowProbabilities)
    {
        long bytesPerQueryRow = (long)heads * keyRows * (sizeof(float) + (narrowProbabilities ? sizeof(ushort) : 0));
        return (int)Math.Clamp(budgetBytes / bytesPerQueryRow, 1, queryRows);
    }

    /// <summary>Query rows per pass of attention's backward: its probabilities and their gradients, float32 each.</summary>
    public static int AttentionBackwardChunkRows(long budgetBytes, int heads, int keyRows, int queryRows) =>
        (int)Math.Clamp(budgetBytes / (2L * heads * keyRows * sizeof(float)), 1, queryRows);

    /// <summary>The flash backward's float32 workspace: the recomputed output and the query gradient, then the log-sum-exp and row dots.</summary>
    public static (long OutputFloats, long StatisticFloats) FlashBackwardWorkspace(int batches, int queryRows, int width, int heads) =>
        ((long)batches * queryRows * width, (long)batches * heads * queryRows);

    /// <summary>
    /// How a column sum splits its rows so about <paramref name="threadTarget"/> threads add partials (at least one
    /// chunk per output); the partials take <see cref="ColumnChunks.PartialsPerSum"/> floats per sum.
    /// </summary>
    public static ColumnChunks ColumnChunks(int threadTarget, int outputs, int cols, int rowsPerOutput)
    {
        long columns = Math.Max(1L * outputs * cols, 1);
        int wanted = (int)Math.Clamp((threadTarget + columns - 1) / columns, 1, Math.Max(rowsPerOutput, 1));
        int rowsPerChunk = Math.Max(1, (rowsPerOutput + wanted - 1) / wanted);
        int chunks = Math.Max(1, (rowsPerOutput + rowsPerChunk - 1) / rowsPerChunk);
        return new ColumnChunks(cols, chunks, rowsPerChunk, rowsPerOutput, columns * chunks);
    }

    /// <summary>
    /// A convolution's im2col chunks: whole images when one fits the scratch budget, else output pixels of one image;
    /// the scratch holds one chunk's patches.
    /// </summary>
    public static (int ImagesPerChunk, int PixelsPerChunk, long ScratchElements) ConvChunks(long budgetFloats, int patchLength, int outPixels, int batch)
    {
        long budget = Math.Max(patchLength, Math.Min(budgetFloats, int.MaxValue));
        int imagesPerChunk = (int)Math.Clamp(budget / ((long)outPixels * patchLength), 0, batch);
        int pixelsPerChunk = imagesPerChunk > 0 ? outPixels : (int)Math.Max(1, budget / patchLength);
        imagesPerChunk = Math.Max(imagesPerChunk, 1);
        return (imagesPerChunk, pixelsPerChunk, (long)imagesPerChunk * Math.Min(pixelsPerChunk, outPixels) * patchLength);
    }

    /// <summary>
    /// GroupNorm's row chunks: enough (sample, group) blocks to fill the device's multiprocessors, none reducing more than
    /// <paramref name="elementsPerBlock"/> elements. Its scratch is 4 floats (two doubles) per pair and chunk, plus 4 per pair.
    /// </summary>
    public static (int RowsPerChunk, int Chunks) GroupNormChunks(int multiprocessors, int pairs, int rows, int groupSize, int elementsPerBlock)
    {
        int wanted = Math.Max(1, (4 * multiprocessors + pairs - 1) / pairs);
        int rowsPerChunk = Math.Min((rows + wanted - 1) / wanted, Math.Max(1, elementsPerBlock / groupSize));
        rowsPerChunk = Math.Max(rowsPerChunk, 1);
        return (rowsPerChunk, (rows + rowsPerChunk - 1) / rowsPerChunk);
    }
}
