using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// softmax(q·kᵀ·scale)·v per (batch, head): the head's keys and values are packed into GEMM panels once, then for
/// each block of query rows the scores S = Q·Kᵀ and the output O = P·V are two products on those panels, and the
/// softmax normalisation is applied to O's rows (Dh values) instead of P's (Lk values). Memory is one score block
/// and one head's packed keys and values per thread, never L×L per head.
/// </summary>
internal static unsafe class CpuAttention
{
    /// <summary>Target bytes of one score block: about half of a 1 MB L2, so S stays cached between the two GEMMs.</summary>
    private const int ScoreBlockBytes = 512 * 1024;

    /// <param name="bias">Optional additive scores [heads, Lq, Lk] (Batch = heads), shared by every sample.</param>
    /// <param name="causal">Query i sees keys 0..i only: its later scores are left out of the softmax.</param>
    public static void Run(View o, View q, View k, View v, int heads, float scale, View? bias = null, bool causal = false)
    {
        int queryRows = q.Rows, keyRows = k.Rows;
        int qkDim = q.Cols / heads, valueDim = v.Cols / heads;
        if (queryRows == 0 || q.Batch == 0) return;
        int blockRows = QueryBlockRows(keyRows);
        int blocksPerHead = (queryRows + blockRows - 1) / blockRows;
        // Whole heads per task amortise the packing of K and V; split heads only when there are too few to share.
        int headsInAllBatches = q.Batch * heads;
        int chunksPerHead = Math.Min(blocksPerHead, Math.Max(1, (2 * CpuParallel.ThreadCount + headsInAllBatches - 1) / headsInAllBatches));
        int tasks = headsInAllBatches * chunksPerHead;

        float* qBase = CpuBackend.Base(q), kBase = CpuBackend.Base(k), vBase = CpuBackend.Base(v), oBase = CpuBackend.Base(o);
        float* biasBase = bias is View b ? CpuBackend.Base(b) : null;
        long biasHeadStride = bias?.BatchStride ?? 0, biasRowStride = bias?.RowStride ?? 0;
        GemmKernel kernel = CpuGemm.BestKernel;
        Action<int> body = task =>
        {
            int chunk = task % chunksPerHead;
            int head = task / chunksPerHead % heads;
            int batch = task / (chunksPerHead * heads);
            int firstBlock = (int)((long)blocksPerHead * chunk / chunksPerHead);
            int endBlock = (int)((long)blocksPerHead * (chunk + 1) / chunksPerHead);

            Scratch scratch = Scratch.ForCurrentThread(
                CpuGemm.PackedWholeBFloats(keyRows, qkDim, kernel), CpuGemm.PackedWholeBFloats(valueDim, keyRows, kernel),
                (long)blockRows * keyRows);
            CpuGemm.PackWholeB(kBase + batch * k.BatchStride + head * qkDim, k.RowStride, bIsKByN: false, keyRows, qkDim, kernel, scratch.Keys);
            CpuGemm.PackWholeB(vBase + batch * v.BatchStride + head * valueDim, v.RowStride, bIsKByN: true, valueDim, keyRows, kernel, scratch.Values);

            for (int block = firstBlock; block < endBlock; block++)
            {
                int row0 = block * blockRows;
                int rows = Math.Min(blockRows, queryRows - row0);
                float* qBlock = qBase + batch * q.BatchStride + row0 * q.RowStride + head * qkDim;
                float* oBlock = oBase + batch * o.BatchStride + row0 * o.RowStride + head * valueDim;
                var mask = new ScoreMask(biasBase == null ? null : biasBase + head * biasHeadStride + row0 * biasRowStride,
                    biasRowStride, causal, row0);
                AttendBlock(oBlock, o.RowStride, qBlock, q.RowStride, scratch, rows, keyRows, qkDim, valueDim, scale, mask, kernel);
            }
        };
        long flops = 2L * q.Batch * heads * queryRows * keyRows * (qkDim + valueDim);
        if (flops < 4_000_000)
            for (int t = 0; t < tasks; t++) body(t);
        else
            CpuParallel.ForTasks(tasks, body);
    }

    private static int QueryBlockRows(int keyRows)
    {
        // A multiple of the GEMM's 12-row micro-panel, with few enough rows that S fits the L2 target.
        int rows = ScoreBlockBytes / (Math.Max(1, keyRows) * sizeof(float));
        return Math.Clamp(rows / 12 * 12, 12, 96);
    }

    private static void AttendBlock(float* o, long ldo, float* q, long ldq, Scratch scratch,
        int rows, int keyRows, int qkDim, int valueDim, float scale, ScoreMask mask, GemmKernel kernel)
    {
        float* scores = scratch.Scores;
        CpuGemm.MultiplyPrepacked(q, ldq, rows, scratch.Keys, keyRows, qkDim, scores, keyRows, kernel);

        Span<float> inverseSums = stackalloc float[rows];
        for (int r = 0; r < rows; r++)
        {
            float* s = scores + (long)r * keyRows;
            // A causal row keeps its first keys; the rest get probability 0 (never −∞ through exp).
            int visible = mask.Causal ? Math.Min(keyRows, mask.FirstQuery + r + 1) : keyRows;
            // Max-subtracted in the scaled domain, so exp never overflows and the largest term is exactly 1. Without a
            // bias, and with a positive scale (which keeps the maximum where it is), the scaling rides in exp's FMA:
            // one pass over the row fewer.
            float rowScale = scale;
            if (mask.Bias != null || !(scale > 0))
            {
                CpuVector.Scale(s, scale, keyRows);
                if (mask.Bias != null) CpuRowKernels.Add(s, s, mask.Bias + r * mask.BiasRowStride, keyRows);
                rowScale = 1f;
            }
            float max = CpuVector.Max(s, visible);
            inverseSums[r] = 1f / CpuVector.ExpScaledInPlace(s, rowScale, rowScale * max, visible);
            for (int j = visible; j < keyRows; j++) s[j] = 0f;
        }

        CpuGemm.MultiplyPrepacked(scores, keyRows, rows, scratch.Values, valueDim, keyRows, o, ldo, kernel);
        for (int r = 0; r < rows; r++) CpuVector.Scale(o + r * ldo, inverseSums[r], valueDim);
    }

    /// <summary>What changes a block's scores: its rows of the bias (or null) and whether later keys are hidden.</summary>
    private readonly struct ScoreMask(float* bias, long biasRowStride, bool causal, int firstQuery)
    {
        public readonly float* Bias = bias;
        public readonly long BiasRowStride = biasRowStride;
        public readonly bool Causal = causal;
        public readonly int FirstQuery = firstQuery;
    }

    /// <summary>One thread's packed keys, packed values and score block, grown on demand and kept for the thread's life.</summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? t_current;

        private long _keysCapacity, _valuesCapacity, _scoresCapacity;

        public float* Keys { get; private set; }
        public float* Values { get; private set; }
        public float* Scores { get; private set; }

        public static Scratch ForCurrentThread(long keys, long values, long scores)
        {
            Scratch scratch = t_current ??= new Scratch();
            scratch.Keys = Grow(scratch.Keys, ref scratch._keysCapacity, keys);
            scratch.Values = Grow(scratch.Values, ref scratch._valuesCapacity, values);
            scratch.Scores = Grow(scratch.Scores, ref scratch._scoresCapacity, scores);
            return scratch;
        }

        private static float* Grow(float* buffer, ref long capacity, long needed)
        {
            if (capacity >= needed && buffer != null) return buffer;
            if (buffer != null) NativeMemory.AlignedFree(buffer);
            capacity = Math.Max(needed, 16);
            return (float*)NativeMemory.AlignedAlloc((nuint)(capacity * sizeof(float)), 64);
        }
    }
}
