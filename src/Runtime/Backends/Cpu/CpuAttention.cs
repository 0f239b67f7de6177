using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// softmax(q·kᵀ·scale)·v per (batch, head, block of query rows): the block's scores S = Q·Kᵀ and the output
/// O = P·V are two packed GEMMs, and the softmax normalisation is applied to O's rows (Dh values) instead of
/// P's (Lk values). Memory is one score block per thread, never L×L per head.
/// </summary>
internal static unsafe class CpuAttention
{
    /// <summary>Target bytes of one score block: about half of a 1 MB L2, so S stays cached between the two GEMMs.</summary>
    private const int ScoreBlockBytes = 512 * 1024;

    [ThreadStatic] private static float* t_scores;
    [ThreadStatic] private static long t_scoresCapacity;

    public static void Run(View o, View q, View k, View v, int heads, float scale)
    {
        int queryRows = q.Rows, keyRows = k.Rows;
        int qkDim = q.Cols / heads, valueDim = v.Cols / heads;
        int blockRows = QueryBlockRows(keyRows);
        int blocksPerHead = (queryRows + blockRows - 1) / blockRows;
        int tasks = q.Batch * heads * blocksPerHead;
        if (tasks == 0) return;

        float* qBase = CpuBackend.Base(q), kBase = CpuBackend.Base(k), vBase = CpuBackend.Base(v), oBase = CpuBackend.Base(o);
        long flopsPerTask = 2L * Math.Min(blockRows, queryRows) * keyRows * (qkDim + valueDim);
        Action<int> body = task =>
        {
            int block = task % blocksPerHead;
            int head = task / blocksPerHead % heads;
            int batch = task / (blocksPerHead * heads);
            int row0 = block * blockRows;
            int rows = Math.Min(blockRows, queryRows - row0);
            float* qBlock = qBase + batch * q.BatchStride + row0 * q.RowStride + head * qkDim;
            float* kHead = kBase + batch * k.BatchStride + head * qkDim;
            float* vHead = vBase + batch * v.BatchStride + head * valueDim;
            float* oBlock = oBase + batch * o.BatchStride + row0 * o.RowStride + head * valueDim;
            AttendBlock(oBlock, o.RowStride, qBlock, q.RowStride, kHead, k.RowStride, vHead, v.RowStride,
                rows, keyRows, qkDim, valueDim, scale);
        };
        if (flopsPerTask * tasks < 4_000_000)
            for (int t = 0; t < tasks; t++) body(t);
        else
            CpuParallel.ForTasks(tasks, body);
    }

    private static int QueryBlockRows(int keyRows)
    {
        // A multiple of the GEMM's 12-row micro-panel; few enough rows that S fits the L2 target, enough that the
        // packing of K and V (redone per block) stays small next to the block's arithmetic.
        int rows = ScoreBlockBytes / (Math.Max(1, keyRows) * sizeof(float));
        return Math.Clamp(rows / 12 * 12, 24, 96);
    }

    private static void AttendBlock(float* o, long ldo, float* q, long ldq, float* k, long ldk, float* v, long ldv,
        int rows, int keyRows, int qkDim, int valueDim, float scale)
    {
        float* scores = ScoreBuffer((long)rows * keyRows);
        GemmKernel kernel = CpuGemm.BestKernel;
        CpuGemm.MultiplySerial(new GemmProblem(rows, keyRows, qkDim, q, ldq, k, ldk, bIsKByN: false, scores, keyRows, null), kernel);

        Span<float> inverseSums = rows <= 256 ? stackalloc float[rows] : new float[rows];
        for (int r = 0; r < rows; r++)
        {
            float* s = scores + (long)r * keyRows;
            // Max-subtracted in the scaled domain, so exp never overflows and the largest term is exactly 1.
            CpuVector.Scale(s, scale, keyRows);
            float max = CpuVector.Max(s, keyRows);
            float sum = CpuVector.ExpScaledInPlace(s, 1f, max, keyRows);
            inverseSums[r] = 1f / sum;
        }

        CpuGemm.MultiplySerial(new GemmProblem(rows, valueDim, keyRows, scores, keyRows, v, ldv, bIsKByN: true, o, ldo, null), kernel);
        for (int r = 0; r < rows; r++) CpuVector.Scale(o + r * ldo, inverseSums[r], valueDim);
    }

    private static float* ScoreBuffer(long floats)
    {
        if (t_scoresCapacity < floats)
        {
            if (t_scores != null) NativeMemory.AlignedFree(t_scores);
            t_scores = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            t_scoresCapacity = floats;
        }
        return t_scores;
    }
}
