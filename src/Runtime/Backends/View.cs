using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// A strided window on an activation <see cref="DeviceTensor"/> (float32, or bf16 from
/// <see cref="IBackend.AllocateActivation"/>; offsets and strides count elements), seen as [Batch, Rows, Cols] with unit column stride.
/// Splits along columns or rows, and broadcasts of one row over many, are views, not copies: every backend op
/// reads and writes through views, so the generated code never copies to slice.
/// Element (b, r, c) lives at Offset + b·BatchStride + r·RowStride + c.
/// </summary>
public readonly record struct View(
    DeviceTensor Tensor, long Offset, int Batch, int Rows, int Cols, long BatchStride, long RowStride)
{
    /// <summary>Folds a contiguous tensor as [product of leading dims, second-last dim, last dim].</summary>
    public static View Of(DeviceTensor tensor)
    {
        int[] s = tensor.Shape;
        int cols = s.Length >= 1 ? s[^1] : 1;
        int rows = s.Length >= 2 ? s[^2] : 1;
        int batch = 1;
        for (int i = 0; i < s.Length - 2; i++) batch *= s[i];
        return new View(tensor, 0, batch, rows, cols, (long)rows * cols, cols);
    }

    public static implicit operator View(DeviceTensor tensor) => Of(tensor);

    public long ElementCount => (long)Batch * Rows * Cols;

    /// <summary>True when the view covers one dense block (rows follow each other, batches follow each other).</summary>
    public bool IsContiguous => RowStride == Cols && (Batch == 1 || BatchStride == (long)Rows * Cols);

    /// <summary>True when all batches can be handled as one matrix of Batch·Rows rows with stride RowStride.</summary>
    public bool BatchesStackAsRows => Batch == 1 || BatchStride == Rows * RowStride;

    /// <summary>Columns [start, start+count) of every row.</summary>
    public View Columns(int start, int count)
    {
        if (start < 0 || count < 0 || start + count > Cols)
            throw new ArgumentOutOfRangeException(nameof(start), $"columns [{start}, {start + count}) outside a view of {Cols} columns");
        return this with { Offset = Offset + start, Cols = count };
    }

    /// <summary>Rows [start, start+count) of every batch.</summary>
    public View RowRange(int start, int count)
    {
        if (start < 0 || count < 0 || start + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside a view of {Rows} rows");
        return this with { Offset = Offset + start * RowStride, Rows = count };
    }

    /// <summary>
    /// Each row of this [1, B, C] view becomes a batch whose single row repeats <paramref name="rows"/> times
    /// (stride 0): a per-sample vector [B, C] broadcast over a sequence [B, rows, C].
    /// </summary>
    public View BroadcastRows(int rows)
    {
        if (Batch != 1)
            throw new InvalidOperationException($"BroadcastRows expects a [1, B, C] view, got [{Batch}, {Rows}, {Cols}]");
        return new View(Tensor, Offset, Rows, rows, Cols, RowStride, 0);
    }

    /// <summary>The same contiguous elements seen with another fold.</summary>
    public View Reshape(int batch, int rows, int cols)
    {
        if (!IsContiguous)
            throw new InvalidOperationException("only a contiguous view can be reshaped");
        if ((long)batch * rows * cols != ElementCount)
            throw new ArgumentException($"cannot reshape [{Batch}, {Rows}, {Cols}] to [{batch}, {rows}, {cols}]");
        return new View(Tensor, Offset, batch, rows, cols, (long)rows * cols, cols);
    }

    public override string ToString() => $"View[{Batch}, {Rows}, {Cols}] of {Tensor}";
}
