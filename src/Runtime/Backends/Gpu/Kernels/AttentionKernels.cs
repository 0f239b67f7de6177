using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// softmax(q·kᵀ·scale)·v per (batch, head), flash-attention style: a group owns <see cref="QueryTile"/> query rows
/// and streams the keys in tiles of <see cref="KeyTile"/>, keeping a running row maximum and row sum (online
/// softmax) and rescaling its output accumulator when the maximum grows, so no L×L score matrix exists anywhere.
///
/// Shared memory for head dims up to <see cref="MaxHeadDim"/> (floats): q tile 16·128, one k-or-v tile 32·129
/// (k and v take turns in the same buffer), scores 16·33, output accumulator 16·128, 3·16 row statistics:
/// 8,800 floats = 34.4 KB, under ILGPU's 48 KB static limit. The +1 strides put a warp's 32 keys, read at the
/// same head column, in 32 different banks.
///
/// Grid (⌈Lq / 16⌉, heads, batch); any group size (128 on a GPU, 16 on the CPU simulator).
/// With mask.HasBias = 1 each score gets bias[head, query, key] added (a [heads, Lq, Lk] view, flat rows head·Lq + query);
/// with mask.Causal = 1 keys after the query are left out (score −∞). Key 0 is in the first tile and never hidden, so
/// every row's running maximum is finite after that tile and exp(−∞ − max) = 0 drops the hidden keys.
/// </summary>
public static class AttentionKernels
{
    public const int QueryTile = 16;
    public const int KeyTile = 32;
    public const int MaxHeadDim = 128;
    private const int KeyStride = MaxHeadDim + 1;
    private const int ScoreStride = KeyTile + 1;

    public static void Attention(int queryRows, int keyRows, int headDim, float scale,
        StridedMatrix o, Elements oData, StridedMatrix q, Elements qData,
        StridedMatrix k, Elements kData, StridedMatrix v, Elements vData, ScoreMask mask)
    {
        var queries = SharedMemory.Allocate<float>(QueryTile * MaxHeadDim);
        var keysOrValues = SharedMemory.Allocate<float>(KeyTile * KeyStride);
        var scores = SharedMemory.Allocate<float>(QueryTile * ScoreStride);
        var output = SharedMemory.Allocate<float>(QueryTile * MaxHeadDim);
        var rowMax = SharedMemory.Allocate<float>(QueryTile);
        var rowSum = SharedMemory.Allocate<float>(QueryTile);
        var rowRescale = SharedMemory.Allocate<float>(QueryTile);

        int thread = Group.IdxX;
        int threads = Group.DimX;
        int firstQuery = Grid.IdxX * QueryTile;
        int headColumn = Grid.IdxY * headDim;
        long queryFlatRow0 = (long)Grid.IdxZ * queryRows + firstQuery;
        long keyFlatRow0 = (long)Grid.IdxZ * keyRows;
        int tileElements = QueryTile * headDim;

        for (int e = thread; e < tileElements; e += threads)
        {
            int i = e / headDim, d = e - i * headDim;
            queries[i * headDim + d] = firstQuery + i < queryRows
                ? qData[q.IndexOf(queryFlatRow0 + i, headColumn + d)]
                : 0f;
            output[e] = 0f;
        }
        for (int i = thread; i < QueryTile; i += threads)
        {
            rowMax[i] = float.NegativeInfinity;
            rowSum[i] = 0f;
        }
        Group.Barrier();

        for (int firstKey = 0; firstKey < keyRows; firstKey += KeyTile)
        {
            int validKeys = XMath.Min(KeyTile, keyRows - firstKey);
            LoadKeyTile(keysOrValues, k, kData, keyFlatRow0 + firstKey, validKeys, headColumn, headDim);
            Group.Barrier();

            for (int e = thread; e < QueryTile * KeyTile; e += threads)
            {
                int i = e / KeyTile, j = e - i * KeyTile;
                float score = float.NegativeInfinity;
                if (j < validKeys)
                {
                    float dot = 0f;
                    int queryBase = i * headDim, keyBase = j * KeyStride;
                    for (int d = 0; d < headDim; d++)
                        dot += queries[queryBase + d] * keysOrValues[keyBase + d];
                    score = dot * scale;
                    int query = firstQuery + i, key = firstKey + j;
                    if (query < queryRows)
                    {
                        if (mask.HasBias != 0)
                            score += mask.BiasData[mask.Bias.IndexOf((long)Grid.IdxY * queryRows + query, key)];
                        if (mask.Causal != 0 && key > query)
                            score = float.NegativeInfinity;
                    }
                }
                scores[i * ScoreStride + j] = score;
            }
            Group.Barrier();

            // The keys are no longer needed: the values take their buffer while the row statistics update.
            LoadKeyTile(keysOrValues, v, vData, keyFlatRow0 + firstKey, validKeys, headColumn, headDim);
            for (int i = thread; i < QueryTile; i += threads)
            {
                float previousMax = rowMax[i];
                float tileMax = previousMax;
                for (int j = 0; j < validKeys; j++)
                    tileMax = XMath.Max(tileMax, scores[i * ScoreStride + j]);
                float tileSum = 0f;
                for (int j = 0; j < validKeys; j++)
                {
                    float p = XMath.Exp(scores[i * ScoreStride + j] - tileMax);
                    scores[i * ScoreStride + j] = p;
                    tileSum += p;
                }
                // exp(−inf − finite) = 0 on the first tile: the empty accumulator is simply dropped.
                float rescale = XMath.Exp(previousMax - tileMax);
                rowRescale[i] = rescale;
                rowSum[i] = rowSum[i] * rescale + tileSum;
                rowMax[i] = tileMax;
            }
            Group.Barrier();

            for (int e = thread; e < tileElements; e += threads)
            {
                int i = e / headDim, d = e - i * headDim;
                float acc = output[e] * rowRescale[i];
                int scoreBase = i * ScoreStride;
                for (int j = 0; j < validKeys; j++)
                    acc += scores[scoreBase + j] * keysOrValues[j * KeyStride + d];
                output[e] = acc;
            }
            Group.Barrier();
        }

        for (int e = thread; e < tileElements; e += threads)
        {
            int i = e / headDim, d = e - i * headDim;
            if (firstQuery + i < queryRows)
                oData[o.IndexOf(queryFlatRow0 + i, headColumn + d)] = output[e] / rowSum[i];
        }
    }

    /// <summary>Largest group <see cref="SoftmaxRows"/> accepts (its shared reduction arrays have this many slots).</summary>
    public const int SoftmaxMaxGroup = 256;

    /// <summary>
    /// For each row of a dense row-major [rows, cols] float32 score matrix: p = exp(x − max)/Σexp(x − max), written to
    /// the same place in <paramref name="probabilities"/>: the scores themselves (in place), or bf16 words for a bf16
    /// product with V. Every thread reads a column before writing it, so in place is safe.
    /// The score pass of attention on cuBLAS: the scale is already applied (the GEMM's alpha).
    /// Grid: one group per row; the group size a power of two up to <see cref="SoftmaxMaxGroup"/>.
    /// Pass 1: each thread keeps an online maximum and a sum of exp(x − maximum) over the columns
    /// col ≡ thread (mod group size), one exp per element, rescaling its sum when its maximum grows; the (maximum,
    /// sum) pairs are then combined by a tree reduction. Pass 2 rereads the row (mostly from L2: a 4608-score row
    /// is 18 KB) and writes the probabilities. So the row is read twice and written once, and no overflow is
    /// possible whatever the scores' size.
    /// </summary>
    public static void SoftmaxRows(int cols, ArrayView<float> data, Elements probabilities)
    {
        var maxima = SharedMemory.Allocate<float>(SoftmaxMaxGroup);
        var sums = SharedMemory.Allocate<float>(SoftmaxMaxGroup);
        int thread = Group.IdxX;
        int threads = Group.DimX;
        long start = (long)Grid.IdxX * cols;

        float max = float.NegativeInfinity;
        float sum = 0f;
        for (int c = thread; c < cols; c += threads)
        {
            float x = data[start + c];
            if (x > max)
            {
                // exp(−inf) = 0 for the first element: the empty sum stays 0.
                sum = sum * XMath.Exp(max - x) + 1f;
                max = x;
            }
            else if (x > float.NegativeInfinity)
            {
                sum += XMath.Exp(x - max);
            }
        }
        maxima[thread] = max;
        sums[thread] = sum;
        Group.Barrier();
        for (int half = threads / 2; half > 0; half >>= 1)
        {
            if (thread < half)
            {
                float a = maxima[thread], b = maxima[thread + half];
                float m = XMath.Max(a, b);
                // Threads that saw no column hold (−inf, 0); two of them must not make exp(−inf + inf) = NaN.
                if (m > float.NegativeInfinity)
                {
                    sums[thread] = sums[thread] * XMath.Exp(a - m) + sums[thread + half] * XMath.Exp(b - m);
                    maxima[thread] = m;
                }
            }
            Group.Barrier();
        }
        float rowMax = maxima[0];
        float inverseSum = 1f / sums[0];

        for (int c = thread; c < cols; c += threads)
            probabilities[start + c] = XMath.Exp(data[start + c] - rowMax) * inverseSum;
    }

    private static void LoadKeyTile(ArrayView<float> tile, StridedMatrix source, Elements sourceData,
        long firstFlatRow, int validRows, int headColumn, int headDim)
    {
        for (int e = Group.IdxX; e < validRows * headDim; e += Group.DimX)
        {
            int j = e / headDim, d = e - j * headDim;
            tile[j * KeyStride + d] = sourceData[source.IndexOf(firstFlatRow + j, headColumn + d)];
        }
    }
}

/// <summary>
/// What an attention kernel adds to its scores: a [heads, Lq, Lk] bias when HasBias is 1 (Bias/BiasData unused
/// otherwise) and the causal mask when Causal is 1. <see cref="None"/> for plain attention.
/// </summary>
public readonly struct ScoreMask
{
    public readonly StridedMatrix Bias;
    public readonly Elements BiasData;
    public readonly int HasBias;
    public readonly int Causal;

    public ScoreMask(StridedMatrix bias, Elements biasData, int hasBias, int causal)
    {
        Bias = bias;
        BiasData = biasData;
        HasBias = hasBias;
        Causal = causal;
    }

    public static ScoreMask None => new(default, default, 0, 0);
}
