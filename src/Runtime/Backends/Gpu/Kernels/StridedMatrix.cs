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

    public long IndexOf(long flatRow, int col)
    {
        long batch = flatRow / Rows;
        long row = flatRow - batch * Rows;
        return Offset + batch * BatchStride + row * RowStride + col;
    }
}
