using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// An attention activation (q, k, v, o, dO, dq, dk, dv) in global memory. Every global read and write of these in the
/// flash kernels goes through <see cref="Load"/> and <see cref="Store"/>: the one place their storage type appears
/// (float32 today; bf16 storage changes these two methods and the field's type, nothing else).
/// </summary>
public readonly struct AttentionTensor
{
    public readonly StridedMatrix Layout;
    public readonly ArrayView<float> Data;

    public AttentionTensor(StridedMatrix layout, ArrayView<float> data)
    {
        Layout = layout;
        Data = data;
    }

    public float Load(long flatRow, int col) => Data[Layout.IndexOf(flatRow, col)];

    public void Store(long flatRow, int col, float value) => Data[Layout.IndexOf(flatRow, col)] = value;

    /// <summary>Elements (flatRow, col) and (flatRow, col + 1) rounded to a bf16 pair; 0 for a row past the end.</summary>
    public uint LoadPair(long flatRow, bool valid, int col) =>
        valid ? BFloat16Pair.Pack(Load(flatRow, col), Load(flatRow, col + 1)) : 0u;
}

/// <summary>
/// FlashAttention-2 (Dao, 2023) on tensor cores: softmax(scale·q·kᵀ + bias)·v per (batch, head) with bf16 products
/// (<see cref="TensorCoreMma"/>, float32 accumulation) and float32 online-softmax statistics, so no score matrix
/// exists in memory; and its backward, which recomputes the probabilities from q, k and the saved log-sum-exp.
///
/// Work split (forward): a group of W warps owns 16·W query rows, each warp 16 of them, and streams the keys in
/// tiles of <see cref="KeyTile"/>. A warp keeps its queries' A fragments, its 16×64 score tile and its 16×headDim
/// output accumulator in registers; the group stages each key and value tile in shared memory as bf16 pairs along
/// the head dimension (<see cref="TileStrideWords"/> words a row: the 4 words of padding put the 8 rows a fragment
/// read touches in different banks). The score accumulator is the A fragment of P·V once rounded to bf16 (a lane's
/// c0..c3 of key columns 8j..8j+7 are exactly its a0/a1 (j even) or a2/a3 (j odd) of the next product), so P never
/// leaves registers; V is read as B fragments across two rows of the tile.
///
/// Shared memory (words): two tiles of 64·68 and the emulation scratch of 4 warps (768): 35.8 KB, under ILGPU's
/// 48 KB static limit. Head dims: multiples of 16 up to <see cref="MaxHeadDim"/>. Groups: 32·W threads, W ≤
/// <see cref="MaxWarps"/> (4 on a GPU; 1 on the CPU simulator, whose threads are OS threads).
/// </summary>
public static class FlashAttentionKernels
{
    public const int MaxHeadDim = 128;
    public const int MaxWarps = 4;
    public const int RowsPerWarp = 16;
    public const int KeyTile = 64;

    /// <summary>Query rows per tile of the backward (a group's keys meet the queries in tiles of this many).</summary>
    public const int BackwardQueryTile = 32;

    private const int TileStrideWords = MaxHeadDim / 2 + 4;
    private const int ScoreFragments = KeyTile / 8 * 4;
    private const int AccumulatorFragments = MaxHeadDim / 8 * 4;
    private const int QueryFragments = MaxHeadDim / 16 * 4;
    private const int GradientStrideWords = MaxWarps * RowsPerWarp / 2 + 4;

    /// <summary>
    /// Grid (⌈Lq / (16·W)⌉, heads, batch), group 32·W. o (and q, k, v) are [batch·L, heads·headDim] with head h in
    /// columns h·headDim.. . With mask.HasBias each score gets bias[head·Lq + query, key] added; with mask.Causal keys
    /// after the query are left out. With saveLogSumExp = 1 it writes logSumExp[(batch·heads + head)·Lq + query] =
    /// max + log Σ exp(score − max) over the (scaled, biased) scores, which the backward needs.
    /// </summary>
    public static void Forward(int queryRows, int keyRows, int headDim, float scale,
        AttentionTensor o, AttentionTensor q, AttentionTensor k, AttentionTensor v, ScoreMask mask,
        ArrayView<float> logSumExp, int saveLogSumExp)
    {
        var keys = SharedMemory.Allocate<uint>(KeyTile * TileStrideWords);
        var values = SharedMemory.Allocate<uint>(KeyTile * TileStrideWords);
        var exchangeAll = SharedMemory.Allocate<uint>(MaxWarps * TensorCoreMma.ExchangeWords);
        var queryFragments = LocalMemory.Allocate<uint>(QueryFragments);
        var scores = LocalMemory.Allocate<float>(ScoreFragments);
        var accumulator = LocalMemory.Allocate<float>(AccumulatorFragments);

        int warps = Group.DimX / TensorCoreMma.WarpLanes;
        int warp = Group.IdxX / TensorCoreMma.WarpLanes;
        int lane = Group.IdxX - warp * TensorCoreMma.WarpLanes;
        var exchange = exchangeAll.SubView(warp * TensorCoreMma.ExchangeWords, TensorCoreMma.ExchangeWords);
        int g = lane >> 2, t = lane & 3;
        int head = Grid.IdxY;
        int headColumn = head * headDim;
        int groupFirstQuery = Grid.IdxX * warps * RowsPerWarp;
        int firstQuery = groupFirstQuery + warp * RowsPerWarp;
        int row0 = firstQuery + g, row1 = row0 + 8;
        long queryFlat0 = (long)Grid.IdxZ * queryRows;
        long keyFlat0 = (long)Grid.IdxZ * keyRows;
        int kSteps = headDim / 16, columnTiles = headDim / 8;

        for (int s = 0; s < kSteps; s++)
        {
            int col = headColumn + 16 * s + 2 * t;
            queryFragments[4 * s] = q.LoadPair(queryFlat0 + row0, row0 < queryRows, col);
            queryFragments[4 * s + 1] = q.LoadPair(queryFlat0 + row1, row1 < queryRows, col);
            queryFragments[4 * s + 2] = q.LoadPair(queryFlat0 + row0, row0 < queryRows, col + 8);
            queryFragments[4 * s + 3] = q.LoadPair(queryFlat0 + row1, row1 < queryRows, col + 8);
        }
        for (int e = 0; e < columnTiles * 4; e++)
            accumulator[e] = 0f;
        float max0 = float.NegativeInfinity, max1 = float.NegativeInfinity, sum0 = 0f, sum1 = 0f;

        // Under the causal mask no query of this group sees a key past its last row.
        int keyEnd = keyRows;
        if (mask.Causal != 0)
            keyEnd = XMath.Min(keyRows, XMath.Min(queryRows, groupFirstQuery + warps * RowsPerWarp));

        for (int firstKey = 0; firstKey < keyEnd; firstKey += KeyTile)
        {
            int validKeys = XMath.Min(KeyTile, keyEnd - firstKey);
            // Two key columns per step of P·V: score columns up to a multiple of 16 (the extra ones are −∞).
            int keySteps = (validKeys + 15) / 16;
            Group.Barrier();
            StageTile(keys, k, keyFlat0 + firstKey, validKeys, 16 * keySteps, headColumn, headDim);
            StageTile(values, v, keyFlat0 + firstKey, validKeys, 16 * keySteps, headColumn, headDim);
            Group.Barrier();

            float tileMax0 = float.NegativeInfinity, tileMax1 = float.NegativeInfinity;
            for (int n = 0; n < 2 * keySteps; n++)
            {
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
                int keyRow = (8 * n + g) * TileStrideWords;
                for (int s = 0; s < kSteps; s++)
                    TensorCoreMma.MultiplyAccumulate(ref s0, ref s1, ref s2, ref s3,
                        queryFragments[4 * s], queryFragments[4 * s + 1], queryFragments[4 * s + 2], queryFragments[4 * s + 3],
                        keys[keyRow + 8 * s + t], keys[keyRow + 8 * s + 4 + t], exchange);
                int key = firstKey + 8 * n + 2 * t;
                s0 = MaskedScore(s0, scale, row0, key, keyEnd, queryRows, head, mask);
                s1 = MaskedScore(s1, scale, row0, key + 1, keyEnd, queryRows, head, mask);
                s2 = MaskedScore(s2, scale, row1, key, keyEnd, queryRows, head, mask);
                s3 = MaskedScore(s3, scale, row1, key + 1, keyEnd, queryRows, head, mask);
                scores[4 * n] = s0;
                scores[4 * n + 1] = s1;
                scores[4 * n + 2] = s2;
                scores[4 * n + 3] = s3;
                tileMax0 = XMath.Max(tileMax0, XMath.Max(s0, s1));
                tileMax1 = XMath.Max(tileMax1, XMath.Max(s2, s3));
            }
            // A row's 64 scores are spread over the 4 lanes of its quad.
            tileMax0 = QuadMax(tileMax0);
            tileMax1 = QuadMax(tileMax1);
            float newMax0 = XMath.Max(max0, tileMax0), newMax1 = XMath.Max(max1, tileMax1);
            // A row with every score so far −∞ (a bias that hides keys) keeps a base of 0: exp(−∞) = 0, no NaN.
            float base0 = newMax0 == float.NegativeInfinity ? 0f : newMax0;
            float base1 = newMax1 == float.NegativeInfinity ? 0f : newMax1;
            float rescale0 = XMath.Exp(max0 - base0), rescale1 = XMath.Exp(max1 - base1);
            max0 = newMax0;
            max1 = newMax1;
            sum0 *= rescale0;
            sum1 *= rescale1;
            for (int n = 0; n < 2 * keySteps; n++)
            {
                float p0 = XMath.Exp(scores[4 * n] - base0), p1 = XMath.Exp(scores[4 * n + 1] - base0);
                float p2 = XMath.Exp(scores[4 * n + 2] - base1), p3 = XMath.Exp(scores[4 * n + 3] - base1);
                scores[4 * n] = p0;
                scores[4 * n + 1] = p1;
                scores[4 * n + 2] = p2;
                scores[4 * n + 3] = p3;
                sum0 += p0 + p1;
                sum1 += p2 + p3;
            }
            for (int j = 0; j < columnTiles; j++)
            {
                accumulator[4 * j] *= rescale0;
                accumulator[4 * j + 1] *= rescale0;
                accumulator[4 * j + 2] *= rescale1;
                accumulator[4 * j + 3] *= rescale1;
            }

            for (int s = 0; s < keySteps; s++)
            {
                uint a0 = BFloat16Pair.Pack(scores[8 * s], scores[8 * s + 1]);
                uint a1 = BFloat16Pair.Pack(scores[8 * s + 2], scores[8 * s + 3]);
                uint a2 = BFloat16Pair.Pack(scores[8 * s + 4], scores[8 * s + 5]);
                uint a3 = BFloat16Pair.Pack(scores[8 * s + 6], scores[8 * s + 7]);
                for (int j = 0; j < columnTiles; j++)
                    TensorCoreMma.MultiplyAccumulate(
                        ref accumulator[4 * j], ref accumulator[4 * j + 1], ref accumulator[4 * j + 2], ref accumulator[4 * j + 3],
                        a0, a1, a2, a3,
                        PairAcrossRows(values, 16 * s + 2 * t, 8 * j + g),
                        PairAcrossRows(values, 16 * s + 8 + 2 * t, 8 * j + g), exchange);
            }
        }

        sum0 = QuadSum(sum0);
        sum1 = QuadSum(sum1);
        float inverse0 = 1f / sum0, inverse1 = 1f / sum1;
        for (int j = 0; j < columnTiles; j++)
        {
            int col = headColumn + 8 * j + 2 * t;
            if (row0 < queryRows)
            {
                o.Store(queryFlat0 + row0, col, accumulator[4 * j] * inverse0);
                o.Store(queryFlat0 + row0, col + 1, accumulator[4 * j + 1] * inverse0);
            }
            if (row1 < queryRows)
            {
                o.Store(queryFlat0 + row1, col, accumulator[4 * j + 2] * inverse1);
                o.Store(queryFlat0 + row1, col + 1, accumulator[4 * j + 3] * inverse1);
            }
        }
        if (saveLogSumExp != 0 && t == 0)
        {
            long rowBase = ((long)Grid.IdxZ * Grid.DimY + head) * queryRows;
            if (row0 < queryRows) logSumExp[rowBase + row0] = max0 + XMath.Log(sum0);
            if (row1 < queryRows) logSumExp[rowBase + row1] = max1 + XMath.Log(sum1);
        }
    }

    /// <summary>
    /// The backward of unmasked attention, FlashAttention-2's loop order: a group of W warps owns 16·W keys (a warp
    /// 16) and meets the queries in tiles of <see cref="BackwardQueryTile"/>. Per tile, with P recomputed as
    /// exp(scale·q·kᵀ − logSumExp), a warp forms Pᵀ and dPᵀ = V·dOᵀ for its keys in registers, accumulates
    /// dV += Pᵀ·dO and dK += dSᵀ·Q (dS = P∘(dP − rowDot)) in registers, and puts dS in shared memory as bf16 so the
    /// group adds dQ += scale·dS·K for the tile with float32 atomics into dqAccumulator (dense [batch·Lq, heads·headDim],
    /// zeroed before). rowDot[(batch·heads + head)·Lq + query] = Σ_d dO·O and logSumExp come from
    /// <see cref="FlashAttentionRowKernels.RowDots"/> and <see cref="Forward"/>.
    ///
    /// Shared memory (words): the q and dO tiles (32·68 each), the group's keys (64·68), dS (32·36), 64 row
    /// statistics and the emulation scratch (768): 42.8 KB. Grid (⌈Lk / (16·W)⌉, heads, batch), group 32·W.
    /// </summary>
    public static void Backward(int queryRows, int keyRows, int headDim, float scale,
        AttentionTensor q, AttentionTensor k, AttentionTensor v, AttentionTensor dOut,
        ArrayView<float> logSumExp, ArrayView<float> rowDot, ArrayView<float> dqAccumulator,
        AttentionTensor dk, AttentionTensor dv)
    {
        var queries = SharedMemory.Allocate<uint>(BackwardQueryTile * TileStrideWords);
        var gradients = SharedMemory.Allocate<uint>(BackwardQueryTile * TileStrideWords);
        var keys = SharedMemory.Allocate<uint>(MaxWarps * RowsPerWarp * TileStrideWords);
        var scoreGradients = SharedMemory.Allocate<uint>(BackwardQueryTile * GradientStrideWords);
        var tileLogSumExp = SharedMemory.Allocate<float>(BackwardQueryTile);
        var tileRowDot = SharedMemory.Allocate<float>(BackwardQueryTile);
        var exchangeAll = SharedMemory.Allocate<uint>(MaxWarps * TensorCoreMma.ExchangeWords);
        var valueFragments = LocalMemory.Allocate<uint>(QueryFragments);
        var probabilities = LocalMemory.Allocate<float>(BackwardQueryTile / 8 * 4);
        var scoreGradient = LocalMemory.Allocate<float>(BackwardQueryTile / 8 * 4);
        var keyGradient = LocalMemory.Allocate<float>(AccumulatorFragments);
        var valueGradient = LocalMemory.Allocate<float>(AccumulatorFragments);

        int warps = Group.DimX / TensorCoreMma.WarpLanes;
        int warp = Group.IdxX / TensorCoreMma.WarpLanes;
        int lane = Group.IdxX - warp * TensorCoreMma.WarpLanes;
        var exchange = exchangeAll.SubView(warp * TensorCoreMma.ExchangeWords, TensorCoreMma.ExchangeWords);
        int g = lane >> 2, t = lane & 3;
        int head = Grid.IdxY;
        int heads = Grid.DimY;
        int headColumn = head * headDim;
        int groupKeys = warps * RowsPerWarp;
        int groupFirstKey = Grid.IdxX * groupKeys;
        int warpKey = warp * RowsPerWarp;
        int validGroupKeys = XMath.Min(groupKeys, keyRows - groupFirstKey);
        long queryFlat0 = (long)Grid.IdxZ * queryRows;
        long keyFlat0 = (long)Grid.IdxZ * keyRows + groupFirstKey;
        long statisticsBase = ((long)Grid.IdxZ * heads + head) * queryRows;
        int kSteps = headDim / 16, columnTiles = headDim / 8;
        int width = heads * headDim;

        StageTile(keys, k, keyFlat0, validGroupKeys, groupKeys, headColumn, headDim);
        int key0 = warpKey + g, key1 = key0 + 8;
        for (int s = 0; s < kSteps; s++)
        {
            int col = headColumn + 16 * s + 2 * t;
            valueFragments[4 * s] = v.LoadPair(keyFlat0 + key0, key0 < validGroupKeys, col);
            valueFragments[4 * s + 1] = v.LoadPair(keyFlat0 + key1, key1 < validGroupKeys, col);
            valueFragments[4 * s + 2] = v.LoadPair(keyFlat0 + key0, key0 < validGroupKeys, col + 8);
            valueFragments[4 * s + 3] = v.LoadPair(keyFlat0 + key1, key1 < validGroupKeys, col + 8);
        }
        for (int e = 0; e < columnTiles * 4; e++)
        {
            keyGradient[e] = 0f;
            valueGradient[e] = 0f;
        }

        for (int firstQuery = 0; firstQuery < queryRows; firstQuery += BackwardQueryTile)
        {
            int validQueries = XMath.Min(BackwardQueryTile, queryRows - firstQuery);
            Group.Barrier();
            StageTile(queries, q, queryFlat0 + firstQuery, validQueries, BackwardQueryTile, headColumn, headDim);
            StageTile(gradients, dOut, queryFlat0 + firstQuery, validQueries, BackwardQueryTile, headColumn, headDim);
            for (int i = Group.IdxX; i < BackwardQueryTile; i += Group.DimX)
            {
                tileLogSumExp[i] = i < validQueries ? logSumExp[statisticsBase + firstQuery + i] : 0f;
                tileRowDot[i] = i < validQueries ? rowDot[statisticsBase + firstQuery + i] : 0f;
            }
            Group.Barrier();

            // Pᵀ and dPᵀ for this warp's 16 keys (rows) and the tile's 32 queries (columns).
            for (int n = 0; n < BackwardQueryTile / 8; n++)
            {
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, d0 = 0f, d1 = 0f, d2 = 0f, d3 = 0f;
                int queryRow = (8 * n + g) * TileStrideWords;
                for (int s = 0; s < kSteps; s++)
                {
                    int keyWord0 = key0 * TileStrideWords + 8 * s + t, keyWord1 = key1 * TileStrideWords + 8 * s + t;
                    uint qb0 = queries[queryRow + 8 * s + t], qb1 = queries[queryRow + 8 * s + 4 + t];
                    TensorCoreMma.MultiplyAccumulate(ref s0, ref s1, ref s2, ref s3,
                        keys[keyWord0], keys[keyWord1], keys[keyWord0 + 4], keys[keyWord1 + 4], qb0, qb1, exchange);
                    TensorCoreMma.MultiplyAccumulate(ref d0, ref d1, ref d2, ref d3,
                        valueFragments[4 * s], valueFragments[4 * s + 1], valueFragments[4 * s + 2], valueFragments[4 * s + 3],
                        gradients[queryRow + 8 * s + t], gradients[queryRow + 8 * s + 4 + t], exchange);
                }
                int query = 8 * n + 2 * t;
                bool live0 = key0 < validGroupKeys, live1 = key1 < validGroupKeys;
                float p0 = Probability(s0, scale, live0 && query < validQueries, tileLogSumExp[query]);
                float p1 = Probability(s1, scale, live0 && query + 1 < validQueries, tileLogSumExp[query + 1]);
                float p2 = Probability(s2, scale, live1 && query < validQueries, tileLogSumExp[query]);
                float p3 = Probability(s3, scale, live1 && query + 1 < validQueries, tileLogSumExp[query + 1]);
                probabilities[4 * n] = p0;
                probabilities[4 * n + 1] = p1;
                probabilities[4 * n + 2] = p2;
                probabilities[4 * n + 3] = p3;
                scoreGradient[4 * n] = p0 * (d0 - tileRowDot[query]);
                scoreGradient[4 * n + 1] = p1 * (d1 - tileRowDot[query + 1]);
                scoreGradient[4 * n + 2] = p2 * (d2 - tileRowDot[query]);
                scoreGradient[4 * n + 3] = p3 * (d3 - tileRowDot[query + 1]);
            }

            // dV += Pᵀ·dO and dK += dSᵀ·Q: the accumulators above are these products' A fragments.
            for (int s = 0; s < BackwardQueryTile / 16; s++)
            {
                uint pa0 = BFloat16Pair.Pack(probabilities[8 * s], probabilities[8 * s + 1]);
                uint pa1 = BFloat16Pair.Pack(probabilities[8 * s + 2], probabilities[8 * s + 3]);
                uint pa2 = BFloat16Pair.Pack(probabilities[8 * s + 4], probabilities[8 * s + 5]);
                uint pa3 = BFloat16Pair.Pack(probabilities[8 * s + 6], probabilities[8 * s + 7]);
                uint da0 = BFloat16Pair.Pack(scoreGradient[8 * s], scoreGradient[8 * s + 1]);
                uint da1 = BFloat16Pair.Pack(scoreGradient[8 * s + 2], scoreGradient[8 * s + 3]);
                uint da2 = BFloat16Pair.Pack(scoreGradient[8 * s + 4], scoreGradient[8 * s + 5]);
                uint da3 = BFloat16Pair.Pack(scoreGradient[8 * s + 6], scoreGradient[8 * s + 7]);
                for (int j = 0; j < columnTiles; j++)
                {
                    int row = 16 * s + 2 * t, col = 8 * j + g;
                    TensorCoreMma.MultiplyAccumulate(
                        ref valueGradient[4 * j], ref valueGradient[4 * j + 1], ref valueGradient[4 * j + 2], ref valueGradient[4 * j + 3],
                        pa0, pa1, pa2, pa3, PairAcrossRows(gradients, row, col), PairAcrossRows(gradients, row + 8, col), exchange);
                    TensorCoreMma.MultiplyAccumulate(
                        ref keyGradient[4 * j], ref keyGradient[4 * j + 1], ref keyGradient[4 * j + 2], ref keyGradient[4 * j + 3],
                        da0, da1, da2, da3, PairAcrossRows(queries, row, col), PairAcrossRows(queries, row + 8, col), exchange);
                }
            }

            // dS as [query][key] bf16 pairs: a lane of even g holds key g, its neighbour 4 lanes on holds key g + 1.
            for (int n = 0; n < BackwardQueryTile / 8; n++)
                for (int i = 0; i < 4; i++)
                {
                    float mine = scoreGradient[4 * n + i];
                    float next = Warp.ShuffleXor(mine, 4);
                    if ((g & 1) == 0)
                    {
                        int query = 8 * n + 2 * t + (i & 1);
                        int key = warpKey + g + 8 * (i >> 1);
                        scoreGradients[query * GradientStrideWords + key / 2] = BFloat16Pair.Pack(mine, next);
                    }
                }
            Group.Barrier();

            // dQ (tile rows × head dim) += scale·dS·K over the group's keys: 16×8 output tiles shared among the warps.
            int outputTiles = BackwardQueryTile / 16 * columnTiles;
            for (int tile = warp; tile < outputTiles; tile += warps)
            {
                int m = tile / columnTiles, j = tile - m * columnTiles;
                float c0 = 0f, c1 = 0f, c2 = 0f, c3 = 0f;
                int dsRow0 = (16 * m + g) * GradientStrideWords, dsRow1 = dsRow0 + 8 * GradientStrideWords;
                for (int s = 0; s < groupKeys / 16; s++)
                    TensorCoreMma.MultiplyAccumulate(ref c0, ref c1, ref c2, ref c3,
                        scoreGradients[dsRow0 + 8 * s + t], scoreGradients[dsRow1 + 8 * s + t],
                        scoreGradients[dsRow0 + 8 * s + 4 + t], scoreGradients[dsRow1 + 8 * s + 4 + t],
                        PairAcrossRows(keys, 16 * s + 2 * t, 8 * j + g), PairAcrossRows(keys, 16 * s + 8 + 2 * t, 8 * j + g), exchange);
                int query0 = 16 * m + g, query1 = query0 + 8;
                int col = headColumn + 8 * j + 2 * t;
                if (query0 < validQueries)
                {
                    long index = (queryFlat0 + firstQuery + query0) * width + col;
                    Atomic.Add(ref dqAccumulator[index], c0 * scale);
                    Atomic.Add(ref dqAccumulator[index + 1], c1 * scale);
                }
                if (query1 < validQueries)
                {
                    long index = (queryFlat0 + firstQuery + query1) * width + col;
                    Atomic.Add(ref dqAccumulator[index], c2 * scale);
                    Atomic.Add(ref dqAccumulator[index + 1], c3 * scale);
                }
            }
        }

        for (int j = 0; j < columnTiles; j++)
        {
            int col = headColumn + 8 * j + 2 * t;
            if (key0 < validGroupKeys)
            {
                dk.Store(keyFlat0 + key0, col, keyGradient[4 * j] * scale);
                dk.Store(keyFlat0 + key0, col + 1, keyGradient[4 * j + 1] * scale);
                dv.Store(keyFlat0 + key0, col, valueGradient[4 * j]);
                dv.Store(keyFlat0 + key0, col + 1, valueGradient[4 * j + 1]);
            }
            if (key1 < validGroupKeys)
            {
                dk.Store(keyFlat0 + key1, col, keyGradient[4 * j + 2] * scale);
                dk.Store(keyFlat0 + key1, col + 1, keyGradient[4 * j + 3] * scale);
                dv.Store(keyFlat0 + key1, col, valueGradient[4 * j + 2]);
                dv.Store(keyFlat0 + key1, col + 1, valueGradient[4 * j + 3]);
            }
        }
    }

    /// <summary>
    /// Rows [firstFlatRow, +validRows) of a head's columns into the first tileRows rows of a tile of bf16 pairs along
    /// the head dimension, <see cref="TileStrideWords"/> words a row. Rows past validRows are zero: every row a
    /// product reads is written (uninitialised shared memory may hold NaN, and 0·NaN is NaN).
    /// </summary>
    private static void StageTile(ArrayView<uint> tile, AttentionTensor source, long firstFlatRow, int validRows,
        int tileRows, int headColumn, int headDim)
    {
        int pairs = headDim / 2;
        for (int e = Group.IdxX; e < tileRows * pairs; e += Group.DimX)
        {
            int row = e / pairs, pair = e - row * pairs;
            tile[row * TileStrideWords + pair] = source.LoadPair(firstFlatRow + row, row < validRows, headColumn + 2 * pair);
        }
    }

    /// <summary>Tile[row][col] and tile[row + 1][col] as a bf16 pair: a B fragment register along the tile's rows.</summary>
    private static uint PairAcrossRows(ArrayView<uint> tile, int row, int col)
    {
        int word = row * TileStrideWords + (col >> 1), half = col & 1;
        return BFloat16Pair.Half(tile[word], half) | (BFloat16Pair.Half(tile[word + TileStrideWords], half) << 16);
    }

    private static float MaskedScore(float dot, float scale, int query, int key, int keyEnd, int queryRows, int head,
        ScoreMask mask)
    {
        if (key >= keyEnd || query >= queryRows)
            return float.NegativeInfinity;
        float score = dot * scale;
        if (mask.HasBias != 0)
            score += mask.BiasData[mask.Bias.IndexOf((long)head * queryRows + query, key)];
        if (mask.Causal != 0 && key > query)
            score = float.NegativeInfinity;
        return score;
    }

    private static float Probability(float dot, float scale, bool live, float logSumExp) =>
        live ? XMath.Exp(dot * scale - logSumExp) : 0f;

    private static float QuadMax(float value)
    {
        value = XMath.Max(value, Warp.ShuffleXor(value, 1));
        return XMath.Max(value, Warp.ShuffleXor(value, 2));
    }

    private static float QuadSum(float value)
    {
        value += Warp.ShuffleXor(value, 1);
        return value + Warp.ShuffleXor(value, 2);
    }
}

/// <summary>Row-wise helpers of the flash backward, one thread per (query row, head).</summary>
public static class FlashAttentionRowKernels
{
    /// <summary>
    /// rowDot[(batch·heads + head)·Lq + query] = Σ_d dO·O over the head's columns (FlashAttention-2's D), index over
    /// batch·heads·Lq. output is the float32 forward recomputed into a dense [batch·Lq, heads·headDim] buffer.
    /// </summary>
    public static void RowDots(Index1D index, int queryRows, int heads, int headDim,
        AttentionTensor dOut, ArrayView<float> output, ArrayView<float> rowDot)
    {
        int query = index % queryRows;
        int batchHead = index / queryRows;
        int head = batchHead % heads;
        long flatRow = (long)(batchHead / heads) * queryRows + query;
        long outputRow = flatRow * heads * headDim + head * headDim;
        float dot = 0f;
        for (int d = 0; d < headDim; d++)
            dot += dOut.Load(flatRow, head * headDim + d) * output[outputRow + d];
        rowDot[index] = dot;
    }

    /// <summary>dq ← the dense float32 accumulator the backward added into, element by element (index over dq).</summary>
    public static void StoreQueryGradient(Index1D index, int width, ArrayView<float> accumulator, AttentionTensor dq)
    {
        int flatRow = index / width;
        int col = index - flatRow * width;
        dq.Store(flatRow, col, accumulator[index]);
    }
}
