namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// The aliasing rules of <see cref="ITrainingBackend"/> as checks any backend can run before launching work: an output
/// addresses each element once, and an output shares no element with an input the op forbids it to alias.
/// </summary>
internal static class ViewRules
{
    /// <summary>An output must not address one element twice (a broadcast output would race and double-count).</summary>
    public static void RequireDistinctOutputElements(View output, string name)
    {
        if (output.ElementCount == 0) return;
        if (output.Rows > 1 && output.RowStride < output.Cols
            || output.Batch > 1 && output.BatchStride < (long)(output.Rows - 1) * output.RowStride + output.Cols)
            throw new ArgumentException($"{output} addresses some elements more than once; an output needs distinct elements", name);
    }

    /// <summary>
    /// A per-sample gradient vector of <see cref="ITrainingBackend"/>'s modulation and gate backwards: [1, batch, cols],
    /// one row per sample of <paramref name="x"/>, addressing each element once and sharing none with x or the op's
    /// <paramref name="others"/> (it is stored while other column chunks still read them). Whether the vector lies
    /// inside its tensor is the backend's own check.
    /// </summary>
    public static void RequirePerSampleVector(View vector, View x, string name, params View[] others)
    {
        if (vector.Batch != 1 || vector.Rows != x.Batch || vector.Cols != x.Cols)
            throw new ArgumentException($"{vector} must be [1, {x.Batch}, {x.Cols}], one row per sample of {x}", name);
        RequireDistinctOutputElements(vector, name);
        RequireDisjoint(vector, x, name);
        foreach (var other in others) RequireDisjoint(vector, other, name);
    }

    /// <summary>
    /// The sizes of <see cref="ITrainingBackend.Gemm"/>'s product, checked: op(a) is [m, k], op(b) [k, n], c [m, n];
    /// the batches of a and b match or one is 1, and c has them all or 1 to sum the products.
    /// </summary>
    public static (int M, int N, int K, int Products, bool SumOverBatches) GemmSizes(View c, View a, bool transposeA, View b, bool transposeB)
    {
        int m = transposeA ? a.Cols : a.Rows, k = transposeA ? a.Rows : a.Cols;
        int bK = transposeB ? b.Cols : b.Rows, n = transposeB ? b.Rows : b.Cols;
        if (k != bK) throw new ArgumentException($"Gemm: op(a) of {a} has {k} columns but op(b) of {b} has {bK} rows");
        if (c.Rows != m || c.Cols != n) throw new ArgumentException($"Gemm: {c} cannot hold the {m}×{n} product", nameof(c));
        int products = Math.Max(a.Batch, b.Batch);
        if (a.Batch != products && a.Batch != 1 || b.Batch != products && b.Batch != 1)
            throw new ArgumentException($"Gemm: batches of {a} and {b} neither match nor broadcast");
        bool sumOverBatches = c.Batch == 1 && products > 1;
        if (c.Batch != products && !sumOverBatches)
            throw new ArgumentException($"Gemm: {c} must have {products} batches, or 1 to sum the products", nameof(c));
        return (m, n, k, products, sumOverBatches);
    }

    /// <summary>
    /// The sizes <see cref="ITrainingBackend.AttentionBackward"/> needs: heads that split q and v, keys and values of
    /// one length, every gradient the shape of its input.
    /// </summary>
    public static void AttentionBackwardShapes(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads)
    {
        if (heads <= 0 || q.Cols % heads != 0 || v.Cols % heads != 0)
            throw new ArgumentException($"AttentionBackward: {heads} heads do not split q ({q.Cols}) and v ({v.Cols}) columns", nameof(heads));
        if (k.Cols != q.Cols) throw new ArgumentException($"AttentionBackward: keys {k} and queries {q} differ in columns");
        if (q.Batch != k.Batch || q.Batch != v.Batch || q.Batch != dOut.Batch)
            throw new ArgumentException("AttentionBackward: q, k, v and dOut differ in batch");
        if (dOut.Rows != q.Rows || dOut.Cols != v.Cols)
            throw new ArgumentException($"AttentionBackward: output gradient {dOut} does not match queries {q} and values {v}");
        if (v.Rows != k.Rows) throw new ArgumentException($"AttentionBackward: values {v} and keys {k} differ in rows");
        if (k.Rows == 0 && q.Rows > 0) throw new ArgumentException("AttentionBackward: attention over zero keys is undefined");
        foreach (var (gradient, like, name) in new[] { (dq, q, nameof(dq)), (dk, k, nameof(dk)), (dv, v, nameof(dv)) })
        {
            if (gradient.Batch != like.Batch || gradient.Rows != like.Rows || gradient.Cols != like.Cols)
                throw new ArgumentException($"AttentionBackward: {name} {gradient} must have the shape of {like}", name);
        }
    }

    /// <summary>Attention's gradients address distinct elements and share none with the inputs or each other.</summary>
    public static void RequireAttentionGradientsApart(View dq, View dk, View dv, View dOut, View q, View k, View v)
    {
        foreach (var (gradient, name) in new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) })
        {
            RequireDistinctOutputElements(gradient, name);
            foreach (View input in new[] { q, k, v, dOut }) RequireDisjoint(gradient, input, name);
        }
        RequireDisjoint(dq, dk, nameof(dk));
        RequireDisjoint(dq, dv, nameof(dv));
        RequireDisjoint(dk, dv, nameof(dv));
    }

    /// <summary>Rejects an output that shares elements with an input of the op.</summary>
    public static void RequireDisjoint(View output, View input, string name)
    {
        if (Overlap(output, input))
            throw new ArgumentException($"{output} overlaps {input}; this op's output must not share elements with it", name);
    }

    /// <summary>
    /// Whether two views may share an element: exact for column slices of one wider tensor (q, k, v of a fused qkv,
    /// their gradients in a fused dqkv), otherwise conservative (any meeting of their address ranges counts).
    /// </summary>
    public static bool Overlap(View x, View y)
    {
        if (!ReferenceEquals(x.Tensor, y.Tensor) || x.ElementCount == 0 || y.ElementCount == 0) return false;
        (long xFirst, long xLast) = Span(x);
        (long yFirst, long yLast) = Span(y);
        if (xLast < yFirst || yLast < xFirst) return false;
        long pitch = x.RowStride;
        if (pitch > 0 && y.RowStride == pitch && StaysInItsColumns(x, pitch) && StaysInItsColumns(y, pitch))
        {
            long xColumn = x.Offset % pitch, yColumn = y.Offset % pitch;
            return xColumn < yColumn + y.Cols && yColumn < xColumn + x.Cols;
        }
        return true;
    }

    /// <summary>Every element of the view sits in columns [Offset mod pitch, + Cols) of a row of that pitch.</summary>
    private static bool StaysInItsColumns(View view, long pitch)
        => view.Offset % pitch + view.Cols <= pitch && (view.Batch == 1 || view.BatchStride % pitch == 0);

    private static (long First, long Last) Span(View view)
        => (view.Offset, view.Offset + (view.Batch - 1) * view.BatchStride + (view.Rows - 1) * view.RowStride + view.Cols - 1);
}
