using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// An attention activation (q, k, v, o, dO, dq, dk, dv) in global memory. Every global read and write of these in the
/// flash kernels goes through <see cref="Load"/> and <see cref="Store"/>: the one place their storage type appears
/// (float32 through the fused kernels' operand today; bf16 storage changes these two methods, nothing else).
/// </summary>
public readonly struct AttentionTensor
{
    public readonly FusedOperand Operand;

    public AttentionTensor(StridedMatrix layout, Elements data) => Operand = new FusedOperand(layout, data);

    public float Load(long flatRow, int col) => Operand.At(flatRow, col);

    public void Store(long flatRow, int col, float value) => Operand.Set(flatRow, col, value);

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

        var (warps, warp, g, t, exchange) = WarpLane(exchangeAll);
        int head = Grid.IdxY;
        int headColumn = head * headDim;
        int groupFirstQuery = Grid.IdxX * warps * RowsPerWarp;
        int firstQuery = groupFirstQuery + warp * RowsPerWarp;
        int row0 = firstQuery + g, row1 = row0 + 8;
        long queryFlat0 = (long)Grid.IdxZ * queryRows;
        long keyFlat0 = (long)Grid.IdxZ * keyRows;
        int kSteps = headDim / 16, columnTiles = headDim / 8;

        // Under the causal mask no query of this group sees a key past its last row.
        int keyEnd = keyRows;
        if (mask.Causal != 0)
            keyEnd = XMath.Min(keyRows, XMath.Min(queryRows, groupFirstQuery + warps * RowsPerWarp));

        var scores = new ScoreTiles
        {
            Queries = MmaRowFragments.Load(q, queryFlat0 + row0, row0 < queryRows, queryFlat0 + row1, row1 < queryRows, headColumn, t, kSteps),
            Keys = keys, Exchange = exchange, G = g, T = t, Steps = kSteps, Scale = scale,
            Row0 = row0, Row1 = row1, KeyEnd = keyEnd, QueryRows = queryRows, Head = head, Mask = mask,
        };
        var exponent = new Exponentials();
        var rescale = new Rescale();
        var product = new ValueProduct { Values = values, Exchange = exchange, G = g, T = t };
        var scoreTiles = new MmaTileOctet();
        var accumulator = new MmaTiles();
        float max0 = float.NegativeInfinity, max1 = float.NegativeInfinity, sum0 = 0f, sum1 = 0f;

        for (int firstKey = 0; firstKey < keyEnd; firstKey += KeyTile)
        {
            int validKeys = XMath.Min(KeyTile, keyEnd - firstKey);
            // Two key columns per step of P·V: score columns up to a multiple of 16 (the extra ones are −∞).
            int keySteps = (validKeys + 15) / 16;
            Group.Barrier();
            StageTile(keys, k, keyFlat0 + firstKey, validKeys, 16 * keySteps, headColumn, headDim);
            StageTile(values, v, keyFlat0 + firstKey, validKeys, 16 * keySteps, headColumn, headDim);
            Group.Barrier();

            scores.FirstKey = firstKey;
            scores.Max0 = float.NegativeInfinity;
            scores.Max1 = float.NegativeInfinity;
            scoreTiles.Apply(ref scores, 2 * keySteps, 0);
            // A row's 64 scores are spread over the 4 lanes of its quad.
            float newMax0 = XMath.Max(max0, QuadMax(scores.Max0)), newMax1 = XMath.Max(max1, QuadMax(scores.Max1));
            // A row with every score so far −∞ (a bias that hides keys) keeps a base of 0: exp(−∞) = 0, no NaN.
            exponent.Base0 = newMax0 == float.NegativeInfinity ? 0f : newMax0;
            exponent.Base1 = newMax1 == float.NegativeInfinity ? 0f : newMax1;
            rescale.Factor0 = XMath.Exp(max0 - exponent.Base0);
            rescale.Factor1 = XMath.Exp(max1 - exponent.Base1);
            max0 = newMax0;
            max1 = newMax1;
            exponent.Sum0 = sum0 * rescale.Factor0;
            exponent.Sum1 = sum1 * rescale.Factor1;
            scoreTiles.Apply(ref exponent, 2 * keySteps, 0);
            sum0 = exponent.Sum0;
            sum1 = exponent.Sum1;
            accumulator.Apply(ref rescale, columnTiles);

            // The probabilities, rounded to bf16, are P·V's A operand as they lie in the lanes.
            product.KeySteps = keySteps;
            product.P0 = MmaOperandA.FromTiles(scoreTiles.T0, scoreTiles.T1);
            product.P1 = MmaOperandA.FromTiles(scoreTiles.T2, scoreTiles.T3);
            product.P2 = MmaOperandA.FromTiles(scoreTiles.T4, scoreTiles.T5);
            product.P3 = MmaOperandA.FromTiles(scoreTiles.T6, scoreTiles.T7);
            accumulator.Apply(ref product, columnTiles);
        }

        sum0 = QuadSum(sum0);
        sum1 = QuadSum(sum1);
        var store = new StoreRows
        {
            Output = o, FlatRow0 = queryFlat0 + row0, FlatRow1 = queryFlat0 + row1, Valid0 = row0 < queryRows,
            Valid1 = row1 < queryRows, HeadColumn = headColumn, T = t, Scale0 = 1f / sum0, Scale1 = 1f / sum1,
        };
        accumulator.Apply(ref store, columnTiles);
        if (saveLogSumExp != 0 && t == 0)
        {
            long rowBase = ((long)Grid.IdxZ * Grid.DimY + head) * queryRows;
            if (row0 < queryRows) logSumExp[rowBase + row0] = max0 + XMath.Log(sum0);
            if (row1 < queryRows) logSumExp[rowBase + row1] = max1 + XMath.Log(sum1);
        }
    }

    /// <summary>Score tile n: the masked, scaled q·kᵀ of the key tile's columns 8n..8n+7, and the rows' maxima.</summary>
    private struct ScoreTiles : IMmaTileOperation
    {
        public MmaRowFragments Queries;
        public ArrayView<uint> Keys, Exchange;
        public int G, T, Steps, FirstKey, Row0, Row1, KeyEnd, QueryRows, Head;
        public float Scale, Max0, Max1;
        public ScoreMask Mask;

        public void Apply(ref MmaTile tile, int n)
        {
            tile = default;
            Queries.MultiplyByRows(ref tile, Keys, (8 * n + G) * TileStrideWords, T, Steps, Exchange);
            int key = FirstKey + 8 * n + 2 * T;
            tile.C0 = MaskedScore(tile.C0, Scale, Row0, key, KeyEnd, QueryRows, Head, Mask);
            tile.C1 = MaskedScore(tile.C1, Scale, Row0, key + 1, KeyEnd, QueryRows, Head, Mask);
            tile.C2 = MaskedScore(tile.C2, Scale, Row1, key, KeyEnd, QueryRows, Head, Mask);
            tile.C3 = MaskedScore(tile.C3, Scale, Row1, key + 1, KeyEnd, QueryRows, Head, Mask);
            Max0 = XMath.Max(Max0, XMath.Max(tile.C0, tile.C1));
            Max1 = XMath.Max(Max1, XMath.Max(tile.C2, tile.C3));
        }
    }

    /// <summary>Scores to exp(score − row base), summed per row (this lane's part).</summary>
    private struct Exponentials : IMmaTileOperation
    {
        public float Base0, Base1, Sum0, Sum1;

        public void Apply(ref MmaTile tile, int n)
        {
            tile.C0 = XMath.Exp(tile.C0 - Base0);
            tile.C1 = XMath.Exp(tile.C1 - Base0);
            tile.C2 = XMath.Exp(tile.C2 - Base1);
            tile.C3 = XMath.Exp(tile.C3 - Base1);
            Sum0 += tile.C0 + tile.C1;
            Sum1 += tile.C2 + tile.C3;
        }
    }

    /// <summary>The output accumulator rescaled when its rows' maxima grow.</summary>
    private struct Rescale : IMmaTileOperation
    {
        public float Factor0, Factor1;

        public void Apply(ref MmaTile tile, int j)
        {
            tile.C0 *= Factor0;
            tile.C1 *= Factor0;
            tile.C2 *= Factor1;
            tile.C3 *= Factor1;
        }
    }

    /// <summary>Output tile j (head columns 8j..8j+7) += P·V over the key tile, 16 keys a step.</summary>
    private struct ValueProduct : IMmaTileOperation
    {
        public MmaOperandA P0, P1, P2, P3;
        public ArrayView<uint> Values, Exchange;
        public int G, T, KeySteps;

        public void Apply(ref MmaTile tile, int j)
        {
            int col = 8 * j + G, row = 2 * T;
            if (KeySteps > 0) TensorCoreMma.MultiplyAccumulate(ref tile, P0, PairAcrossRows(Values, row, col), PairAcrossRows(Values, row + 8, col), Exchange);
            if (KeySteps > 1) TensorCoreMma.MultiplyAccumulate(ref tile, P1, PairAcrossRows(Values, row + 16, col), PairAcrossRows(Values, row + 24, col), Exchange);
            if (KeySteps > 2) TensorCoreMma.MultiplyAccumulate(ref tile, P2, PairAcrossRows(Values, row + 32, col), PairAcrossRows(Values, row + 40, col), Exchange);
            if (KeySteps > 3) TensorCoreMma.MultiplyAccumulate(ref tile, P3, PairAcrossRows(Values, row + 48, col), PairAcrossRows(Values, row + 56, col), Exchange);
        }
    }

    /// <summary>Tile j of a lane's rows (g and g + 8), scaled per row, into head columns 8j..8j+7 of a tensor.</summary>
    private struct StoreRows : IMmaTileOperation
    {
        public AttentionTensor Output;
        public long FlatRow0, FlatRow1;
        public bool Valid0, Valid1;
        public int HeadColumn, T;
        public float Scale0, Scale1;

        public void Apply(ref MmaTile tile, int j)
        {
            int col = HeadColumn + 8 * j + 2 * T;
            if (Valid0)
            {
                Output.Store(FlatRow0, col, tile.C0 * Scale0);
                Output.Store(FlatRow0, col + 1, tile.C1 * Scale0);
            }
            if (Valid1)
            {
                Output.Store(FlatRow1, col, tile.C2 * Scale1);
                Output.Store(FlatRow1, col + 1, tile.C3 * Scale1);
            }
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

        var (warps, warp, g, t, exchange) = WarpLane(exchangeAll);
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
        int key0 = warpKey + g, key1 = key0 + 8;

        StageTile(keys, k, keyFlat0, validGroupKeys, groupKeys, headColumn, headDim);
        var probabilities = new Probabilities
        {
            Keys = keys, Queries = queries, Exchange = exchange, Key0Word = key0 * TileStrideWords,
            Key1Word = key1 * TileStrideWords, G = g, T = t, Steps = kSteps, Scale = scale,
            Live0 = key0 < validGroupKeys, Live1 = key1 < validGroupKeys, LogSumExp = tileLogSumExp,
        };
        var scoreGradient = new ScoreGradients
        {
            Values = MmaRowFragments.Load(v, keyFlat0 + key0, key0 < validGroupKeys, keyFlat0 + key1, key1 < validGroupKeys, headColumn, t, kSteps),
            Gradients = gradients, Exchange = exchange, G = g, T = t, Steps = kSteps, RowDot = tileRowDot,
        };
        var publish = new PublishScoreGradients { Target = scoreGradients, WarpKey = warpKey, G = g, T = t };
        var valueProduct = new ValueProduct { Values = gradients, Exchange = exchange, G = g, T = t, KeySteps = BackwardQueryTile / 16 };
        var keyProduct = new ValueProduct { Values = queries, Exchange = exchange, G = g, T = t, KeySteps = BackwardQueryTile / 16 };
        var probabilityTiles = new MmaTileOctet();
        var scoreGradientTiles = new MmaTileOctet();
        var keyGradient = new MmaTiles();
        var valueGradient = new MmaTiles();
        const int QueryTiles = BackwardQueryTile / 8;

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

            // Pᵀ, then dSᵀ = Pᵀ∘(dPᵀ − rowDot), for this warp's 16 keys (rows) and the tile's 32 queries (columns).
            probabilities.ValidQueries = validQueries;
            probabilityTiles.Apply(ref probabilities, QueryTiles, 0);
            scoreGradientTiles = probabilityTiles;
            scoreGradientTiles.Apply(ref scoreGradient, QueryTiles, 0);

            // dV += Pᵀ·dO and dK += dSᵀ·Q: the tiles above are these products' A operands as they lie in the lanes.
            valueProduct.P0 = MmaOperandA.FromTiles(probabilityTiles.T0, probabilityTiles.T1);
            valueProduct.P1 = MmaOperandA.FromTiles(probabilityTiles.T2, probabilityTiles.T3);
            valueGradient.Apply(ref valueProduct, columnTiles);
            keyProduct.P0 = MmaOperandA.FromTiles(scoreGradientTiles.T0, scoreGradientTiles.T1);
            keyProduct.P1 = MmaOperandA.FromTiles(scoreGradientTiles.T2, scoreGradientTiles.T3);
            keyGradient.Apply(ref keyProduct, columnTiles);

            scoreGradientTiles.Apply(ref publish, QueryTiles, 0);
            Group.Barrier();

            // dQ (tile rows × head dim) += scale·dS·K over the group's keys: 16×8 output tiles shared among the warps.
            int outputTiles = BackwardQueryTile / 16 * columnTiles;
            for (int tile = warp; tile < outputTiles; tile += warps)
            {
                int m = tile / columnTiles, j = tile - m * columnTiles;
                var product = new MmaTile();
                int dsRow0 = (16 * m + g) * GradientStrideWords, dsRow1 = dsRow0 + 8 * GradientStrideWords;
                for (int s = 0; s < groupKeys / 16; s++)
                    TensorCoreMma.MultiplyAccumulate(ref product,
                        new MmaOperandA(scoreGradients[dsRow0 + 8 * s + t], scoreGradients[dsRow1 + 8 * s + t],
                            scoreGradients[dsRow0 + 8 * s + 4 + t], scoreGradients[dsRow1 + 8 * s + 4 + t]),
                        PairAcrossRows(keys, 16 * s + 2 * t, 8 * j + g), PairAcrossRows(keys, 16 * s + 8 + 2 * t, 8 * j + g), exchange);
                int query0 = 16 * m + g, query1 = query0 + 8;
                int col = headColumn + 8 * j + 2 * t;
                if (query0 < validQueries)
                {
                    long index = (queryFlat0 + firstQuery + query0) * width + col;
                    Atomic.Add(ref dqAccumulator[index], product.C0 * scale);
                    Atomic.Add(ref dqAccumulator[index + 1], product.C1 * scale);
                }
                if (query1 < validQueries)
                {
                    long index = (queryFlat0 + firstQuery + query1) * width + col;
                    Atomic.Add(ref dqAccumulator[index], product.C2 * scale);
                    Atomic.Add(ref dqAccumulator[index + 1], product.C3 * scale);
                }
            }
        }

        var store = new StoreRows
        {
            Output = dk, FlatRow0 = keyFlat0 + key0, FlatRow1 = keyFlat0 + key1, Valid0 = key0 < validGroupKeys,
            Valid1 = key1 < validGroupKeys, HeadColumn = headColumn, T = t, Scale0 = scale, Scale1 = scale,
        };
        keyGradient.Apply(ref store, columnTiles);
        store.Output = dv;
        store.Scale0 = 1f;
        store.Scale1 = 1f;
        valueGradient.Apply(ref store, columnTiles);
    }

    /// <summary>
    /// Tile n of Pᵀ: exp(scale·k·qᵀ − logSumExp) for the warp's keys (rows, A read from the staged key tile) and
    /// queries 8n..8n+7 of the tile (B: their staged rows); 0 for keys or queries past the end.
    /// </summary>
    private struct Probabilities : IMmaTileOperation
    {
        public ArrayView<uint> Keys, Queries, Exchange;
        public ArrayView<float> LogSumExp;
        public int Key0Word, Key1Word, G, T, Steps, ValidQueries;
        public float Scale;
        public bool Live0, Live1;

        public void Apply(ref MmaTile tile, int n)
        {
            tile = default;
            int queryWord = (8 * n + G) * TileStrideWords + T;
            for (int s = 0; s < Steps; s++)
                TensorCoreMma.MultiplyAccumulate(ref tile,
                    new MmaOperandA(Keys[Key0Word + 8 * s + T], Keys[Key1Word + 8 * s + T], Keys[Key0Word + 8 * s + 4 + T], Keys[Key1Word + 8 * s + 4 + T]),
                    Queries[queryWord + 8 * s], Queries[queryWord + 8 * s + 4], Exchange);
            int query = 8 * n + 2 * T;
            bool query0 = query < ValidQueries, query1 = query + 1 < ValidQueries;
            tile.C0 = Live0 && query0 ? XMath.Exp(tile.C0 * Scale - LogSumExp[query]) : 0f;
            tile.C1 = Live0 && query1 ? XMath.Exp(tile.C1 * Scale - LogSumExp[query + 1]) : 0f;
            tile.C2 = Live1 && query0 ? XMath.Exp(tile.C2 * Scale - LogSumExp[query]) : 0f;
            tile.C3 = Live1 && query1 ? XMath.Exp(tile.C3 * Scale - LogSumExp[query + 1]) : 0f;
        }
    }

    /// <summary>A tile of Pᵀ into dSᵀ = Pᵀ∘(V·dOᵀ − rowDot), V's A fragments in registers.</summary>
    private struct ScoreGradients : IMmaTileOperation
    {
        public MmaRowFragments Values;
        public ArrayView<uint> Gradients, Exchange;
        public ArrayView<float> RowDot;
        public int G, T, Steps;

        public void Apply(ref MmaTile tile, int n)
        {
            var dp = new MmaTile();
            Values.MultiplyByRows(ref dp, Gradients, (8 * n + G) * TileStrideWords, T, Steps, Exchange);
            int query = 8 * n + 2 * T;
            tile.C0 *= dp.C0 - RowDot[query];
            tile.C1 *= dp.C1 - RowDot[query + 1];
            tile.C2 *= dp.C2 - RowDot[query];
            tile.C3 *= dp.C3 - RowDot[query + 1];
        }
    }

    /// <summary>
    /// A tile of dSᵀ into the shared [query][key] bf16 pairs dQ's product reads: a lane of even g holds key g, the
    /// lane 4 on (g + 1) holds the next key, so the even lane writes the pair.
    /// </summary>
    private struct PublishScoreGradients : IMmaTileOperation
    {
        public ArrayView<uint> Target;
        public int WarpKey, G, T;

        public void Apply(ref MmaTile tile, int n)
        {
            int query = 8 * n + 2 * T, key = WarpKey + G;
            float next0 = Warp.ShuffleXor(tile.C0, 4), next1 = Warp.ShuffleXor(tile.C1, 4);
            float next2 = Warp.ShuffleXor(tile.C2, 4), next3 = Warp.ShuffleXor(tile.C3, 4);
            if ((G & 1) == 0)
            {
                Target[query * GradientStrideWords + key / 2] = BFloat16Pair.Pack(tile.C0, next0);
                Target[(query + 1) * GradientStrideWords + key / 2] = BFloat16Pair.Pack(tile.C1, next1);
                Target[query * GradientStrideWords + (key + 8) / 2] = BFloat16Pair.Pack(tile.C2, next2);
                Target[(query + 1) * GradientStrideWords + (key + 8) / 2] = BFloat16Pair.Pack(tile.C3, next3);
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

    /// <summary>This thread's warp count and index, its lane's g = lane / 4 and t = lane % 4, and its warp's mma scratch.</summary>
    private static (int Warps, int Warp, int G, int T, ArrayView<uint> Exchange) WarpLane(ArrayView<uint> exchangeAll)
    {
        int warp = Group.IdxX / TensorCoreMma.WarpLanes;
        int lane = Group.IdxX - warp * TensorCoreMma.WarpLanes;
        return (Group.DimX / TensorCoreMma.WarpLanes, warp, lane >> 2, lane & 3,
            exchangeAll.SubView(warp * TensorCoreMma.ExchangeWords, TensorCoreMma.ExchangeWords));
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
