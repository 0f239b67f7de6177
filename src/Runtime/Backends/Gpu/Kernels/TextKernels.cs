using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// The text encoders' kernels: token and position embeddings, quick GELU, products, T5's relative
/// position bias, the score mask of the cuBLAS attention path, and CLIP's argmax pooling. Element kernels take one
/// thread per output element and read before they write, so an output may alias its first input.
/// </summary>
public static class TextKernels
{
    public static void EmbeddingFloat32(Index1D index, int cols, int vocab, StridedMatrix y, Elements yData,
        StridedMatrix ids, Elements idsData, ArrayView<float> table) =>
        Gather(index, cols, vocab, y, yData, ids, idsData, new Float32Weights(table));

    public static void EmbeddingBFloat16(Index1D index, int cols, int vocab, StridedMatrix y, Elements yData,
        StridedMatrix ids, Elements idsData, ArrayView<ushort> table) =>
        Gather(index, cols, vocab, y, yData, ids, idsData, new BFloat16Weights(table));

    public static void EmbeddingFloat16(Index1D index, int cols, int vocab, StridedMatrix y, Elements yData,
        StridedMatrix ids, Elements idsData, ArrayView<ushort> table) =>
        Gather(index, cols, vocab, y, yData, ids, idsData, new Float16Weights(table));

    /// <summary>y[row, col] = table[ids[row], col]; an id that is not a whole number in [0, vocab) gives NaN (a kernel cannot throw).</summary>
    private static void Gather<TTable>(Index1D index, int cols, int vocab, StridedMatrix y, Elements yData,
        StridedMatrix ids, Elements idsData, TTable table) where TTable : struct, IWeightElements
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float id = idsData[ids.IndexOf(flatRow, 0)];
        bool valid = id >= 0f && id < vocab && id == XMath.Floor(id);
        yData[y.IndexOf(flatRow, col)] = valid ? table.Load((long)id * cols + col) : float.NaN;
    }

    /// <summary>y[b, r, c] = x[b, r, c] + table[r, c] (table float32, row-major with cols columns).</summary>
    public static void AddPosition(Index1D index, int cols, int rows, StridedMatrix y, Elements yData,
        StridedMatrix x, Elements xData, ArrayView<float> table)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        long position = flatRow % rows;
        yData[y.IndexOf(flatRow, col)] = xData[x.IndexOf(flatRow, col)] + table[position * cols + col];
    }

    public static void QuickGelu(Index1D index, int cols, StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        // exp(−1.702v) overflows to +inf for very negative v and v/inf is −0: the right limit, no NaN.
        yData[y.IndexOf(flatRow, col)] = v / (1f + XMath.Exp(-1.702f * v));
    }

    public static void Multiply(Index1D index, int cols, StridedMatrix y, Elements yData,
        StridedMatrix a, Elements aData, StridedMatrix b, Elements bData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] = aData[a.IndexOf(flatRow, col)] * bData[b.IndexOf(flatRow, col)];
    }

    /// <summary>
    /// bias[h, i, j] = table[bucket[j − i + queries − 1], h] over a [heads, queries, keys] view (flat rows h·queries + i);
    /// table float32 [buckets, heads], buckets from <see cref="Numerics.RelativePositionBuckets"/>.
    /// </summary>
    public static void RelativePositionBias(Index1D index, int keys, int queries, int heads, StridedMatrix bias, Elements biasData,
        ArrayView<int> buckets, ArrayView<float> table)
    {
        long flatRow = index / keys;
        int j = index - (int)(flatRow * keys);
        int head = (int)(flatRow / queries);
        int i = (int)(flatRow - (long)head * queries);
        biasData[bias.IndexOf(flatRow, j)] = table[(long)buckets[j - i + queries - 1] * heads + head];
    }

    /// <summary>
    /// The cuBLAS attention path's mask, in place on dense scores [heads, n, keys] of query rows firstQuery..firstQuery+n−1:
    /// adds bias[h, query, j] (when hasBias is 1) and sets −∞ where causal hides key j &gt; query.
    /// </summary>
    public static void MaskScores(Index1D index, int keys, int n, int firstQuery, ArrayView<float> scores,
        StridedMatrix bias, Elements biasData, int hasBias, int causal, int biasRows)
    {
        long flatRow = index / keys;
        int j = index - (int)(flatRow * keys);
        long head = flatRow / n;
        int query = firstQuery + (int)(flatRow - head * n);
        float score = scores[index];
        if (hasBias != 0)
            score += biasData[bias.IndexOf(head * biasRows + query, j)];
        if (causal != 0 && j > query)
            score = float.NegativeInfinity;
        scores[index] = score;
    }

    /// <summary>
    /// One thread per element of y [B, 1, C] (flat row b): y[b, c] = x[b, argmax(ids[b, :]), c], the first position of
    /// the largest id. Each thread scans its sample's ids (a few hundred at most).
    /// </summary>
    public static void GatherArgmaxRows(Index1D index, int cols, int positions, StridedMatrix y, Elements yData,
        StridedMatrix x, Elements xData, StridedMatrix ids, Elements idsData)
    {
        long sample = index / cols;
        int col = index - (int)(sample * cols);
        int best = 0;
        float largest = idsData[ids.IndexOf(sample, 0)];
        for (int j = 1; j < positions; j++)
        {
            float id = idsData[ids.IndexOf(sample, j)];
            if (id > largest)
            {
                largest = id;
                best = j;
            }
        }
        yData[y.IndexOf(sample, col)] = xData[x.IndexOf(sample * x.Rows + best, col)];
    }
}

/// <summary>The text encoders' row reductions, explicitly grouped like <see cref="RowNormKernels"/>.</summary>
public static class TextRowKernels
{
    /// <summary>
    /// Grid: one group per flat row. LayerNorm as <see cref="RowNormKernels.LayerNorm"/> (two passes, float32), then
    /// ·scale[c] + bias[c] (bias read only when hasBias is 1).
    /// </summary>
    public static void AffineLayerNorm(int cols, float eps, StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        ArrayView<float> scale, ArrayView<float> bias, int hasBias)
    {
        var partials = SharedMemory.Allocate<float>(RowNormKernels.MaxGroupSize);
        long flatRow = Grid.IdxX;
        int thread = Group.IdxX;
        int threads = Group.DimX;

        float sum = 0f;
        for (int col = thread; col < cols; col += threads)
            sum += xData[x.IndexOf(flatRow, col)];
        float mean = RowNormKernels.GroupSum(partials, sum) / cols;
        float squares = 0f;
        for (int col = thread; col < cols; col += threads)
        {
            float d = xData[x.IndexOf(flatRow, col)] - mean;
            squares += d * d;
        }
        float inverseStd = 1f / XMath.Sqrt(RowNormKernels.GroupSum(partials, squares) / cols + eps);
        for (int col = thread; col < cols; col += threads)
        {
            float normalised = (xData[x.IndexOf(flatRow, col)] - mean) * inverseStd * scale[col];
            yData[y.IndexOf(flatRow, col)] = hasBias != 0 ? normalised + bias[col] : normalised;
        }
    }
}
