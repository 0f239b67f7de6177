namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// A <see cref="View"/> as kernels see it: rows of all batches numbered 0..Batch·Rows−1 ("flat rows"), so one
/// index space covers both batched and unbatched views, and a stride of 0 broadcasts.
/// </summary>
public readonly struct StridedMatrix
{
    public readonly long Offset;
    public readonly int Rows;
    public readonly long BatchStride;
    public readonly long RowStride;

    public StridedMatrix(long offset, int rows, long batchStride, long rowStride)
    {
        Offset = offset;
        // A view with no rows is never launched on; 1 keeps the division in IndexOf defined.
        Rows = rows < 1 ? 1 : rows;
        BatchStride = batchStride;
        RowStride = rowStride;
    }

    /// <summary>
    /// Flat rows are below 2³¹ (every launch is int-sized), so the batch split is a 32-bit division: on a GPU a
    /// 64-bit division is a long software routine, and it sat in every element of every element-wise kernel
    /// (Copy and Add ran at a fifth of the memory bandwidth). Views whose batches stack as rows, the common case,
    /// skip the division altogether.
    /// </summary>
    public long IndexOf(long flatRow, int col)
    {
        if (BatchStride == Rows * RowStride)
            return Offset + flatRow * RowStride + col;
        int flat = (int)flatRow;
        int batch = flat / Rows;
        int row = flat - batch * Rows;
        return Offset + batch * BatchStride + row * RowStride + col;
    }
}
