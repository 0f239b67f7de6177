using InFluxEdit.Runtime.Numerics;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>The text encoders' ops: token and position embeddings, affine LayerNorm, gated activations, masked attention.</summary>
public sealed unsafe partial class CpuBackend
{
    public void Embedding(View y, View ids, DeviceTensor table)
    {
        CpuTensor t = AsCpu(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[1] != y.Cols)
            throw new ArgumentException($"table {t} must be [vocab, {y.Cols}] for {y}", nameof(table));
        if (ids.Cols != 1 || ids.Batch != y.Batch || ids.Rows != y.Rows)
            throw new ArgumentException($"ids {ids} must have one column per row of {y}", nameof(ids));
        RequireInside(y, nameof(y));
        RequireInside(ids, nameof(ids));
        int vocab = t.Shape[0], n = y.Cols;
        RowWalker ys = new(y), idRows = new(ids);
        float* tableBase = t.Pointer;
        for (int i = 0; i < ys.Count; i++)
        {
            int id = TokenId(*idRows[i], vocab);
            CpuRowKernels.Copy(ys[i], tableBase + (long)id * n, n);
        }
    }

    /// <summary>A float32 id as a row index, refused unless it is a whole number below the vocabulary size.</summary>
    private static int TokenId(float value, int vocab)
    {
        if (!(value >= 0 && value < vocab && value == MathF.Floor(value)))
            throw new ArgumentException($"token id {value} is not a whole number in [0, {vocab})");
        return (int)value;
    }

    public void AddPositionEmbedding(View y, View x, DeviceTensor table)
    {
        RequireSameShape(y, x, nameof(x));
        CpuTensor t = AsCpu(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[1] != y.Cols || t.Shape[0] < y.Rows)
            throw new ArgumentException($"position table {t} must be [≥ {y.Rows}, {y.Cols}] for {y}", nameof(table));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols, rows = y.Rows;
        float* tableBase = t.Pointer;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.Add(ys[i], xs[i], tableBase + (long)(i % rows) * n, n);
        });
    }

    public void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps)
    {
        RequireSameShape(y, x, nameof(x));
        CpuTensor s = AsCpu(scale, nameof(scale));
        CpuTensor? b = bias is null ? null : AsCpu(bias, nameof(bias));
        if (s.Length != x.Cols) throw new ArgumentException($"scale {s} does not have {x.Cols} elements", nameof(scale));
        if (b is not null && b.Length != x.Cols) throw new ArgumentException($"bias {b} does not have {x.Cols} elements", nameof(bias));
        RowWalker ys = new(y), xs = new(x);
        int n = x.Cols;
        float* scalePointer = s.Pointer, biasPointer = b is null ? null : b.Pointer;
        CpuParallel.ForRanges(ys.Count, 2L * n, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float* row = ys[i];
                CpuRowKernels.LayerNorm(row, xs[i], n, eps);
                for (int c = 0; c < n; c++) row[c] = row[c] * scalePointer[c] + (biasPointer == null ? 0f : biasPointer[c]);
            }
        });
    }

    public void QuickGelu(View y, View x)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, 4L * n, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float* yRow = ys[i], xRow = xs[i];
                for (int c = 0; c < n; c++) yRow[c] = CpuVector.TimesSigmoid(xRow[c], 1.702f * xRow[c]);
            }
        });
    }

    public void Multiply(View y, View a, View b)
    {
        RequireSameShape(y, a, nameof(a));
        RequireSameShape(y, b, nameof(b));
        RowWalker ys = new(y), As = new(a), bs = new(b);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float* yRow = ys[i], aRow = As[i], bRow = bs[i];
                for (int c = 0; c < n; c++) yRow[c] = aRow[c] * bRow[c];
            }
        });
    }

    public void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional)
    {
        CpuTensor t = AsCpu(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[0] != buckets || t.Shape[1] != bias.Batch)
            throw new ArgumentException($"table {t} must be [{buckets} buckets, {bias.Batch} heads] for {bias}", nameof(table));
        RequireInside(bias, nameof(bias));
        int heads = bias.Batch, queries = bias.Rows, keys = bias.Cols;
        int[] bucketOf = RelativePositionBuckets.Compute(queries, keys, buckets, maxDistance, bidirectional);
        RowWalker rows = new(bias);
        float* tableBase = t.Pointer;
        for (int r = 0; r < rows.Count; r++)
        {
            int head = r / queries, i = r % queries;
            float* row = rows[r];
            for (int j = 0; j < keys; j++) row[j] = tableBase[bucketOf[j - i + queries - 1] * heads + head];
        }
    }

    public void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal)
    {
        if (bias is View b)
        {
            if (b.Batch != heads || b.Rows != q.Rows || b.Cols != k.Rows)
                throw new ArgumentException($"bias {b} must be [{heads} heads, {q.Rows} queries, {k.Rows} keys]", nameof(bias));
            RequireInside(b, nameof(bias));
        }
        CheckAttention(o, q, k, v, heads);
        CpuAttention.Run(o, q, k, v, heads, scale, bias, causal);
    }

    public void GatherArgmaxRows(View y, View x, View ids)
    {
        if (ids.Batch != x.Batch || ids.Rows != 1 || ids.Cols != x.Rows)
            throw new ArgumentException($"ids {ids} must be [{x.Batch}, 1, {x.Rows}] for {x}", nameof(ids));
        if (y.Batch != x.Batch || y.Rows != 1 || y.Cols != x.Cols)
            throw new ArgumentException($"y {y} must be [{x.Batch}, 1, {x.Cols}] for {x}", nameof(y));
        if (x.Rows == 0) throw new ArgumentException("argmax over zero positions is undefined", nameof(x));
        RequireInside(y, nameof(y));
        RequireInside(x, nameof(x));
        RequireInside(ids, nameof(ids));
        float* idBase = Base(ids), xBase = Base(x), yBase = Base(y);
        for (int b = 0; b < x.Batch; b++)
        {
            float* row = idBase + b * ids.BatchStride;
            int best = 0;
            // Strictly greater: the first position of the largest id wins, as torch.argmax picks it.
            for (int j = 1; j < ids.Cols; j++)
                if (row[j] > row[best]) best = j;
            CpuRowKernels.Copy(yBase + b * y.BatchStride, xBase + b * x.BatchStride + best * x.RowStride, x.Cols);
        }
    }
}
