using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// Gradients of softmax(q·kᵀ·scale)·v per (batch, head), block of query rows after block, recomputing the block's
/// probabilities P instead of storing them from the forward:
/// S = Q·Kᵀ, P = softmax(S·scale), dP = dO·Vᵀ, dS = P⊙(dP − rowsum(P⊙dP))·scale,
/// dQ = dS·K, dK = Σ_blocks dSᵀ·Q, dV = Σ_blocks Pᵀ·dO.
/// All five products run on the packed GEMM: the head's K (both layouts) and V are packed once per task, the two
/// transposed products pack the block's P and dS as column panels. Memory per thread is two score blocks and the
/// packed head, never L×L.
/// </summary>
internal static unsafe class CpuAttentionBackward
{
    /// <summary>Target bytes of the P and dS blocks together: they are walked by three products each, so keep them near L2.</summary>
    private const int ScoreBlocksBytes = 1024 * 1024;

    public static void Run(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale)
    {
        int queryRows = q.Rows, keyRows = k.Rows, batches = q.Batch;
        int qkDim = q.Cols / heads, valueDim = v.Cols / heads;
        if (batches == 0) return;
        if (queryRows == 0)
        {
            // No query looked at the keys: their gradients are zero.
            ClearHeads(dk, batches, heads, qkDim);
            ClearHeads(dv, batches, heads, valueDim);
            return;
        }

        int blockRows = QueryBlockRows(keyRows);
        int blocksPerHead = (queryRows + blockRows - 1) / blockRows;
        int headsInAllBatches = batches * heads;
        // Split a head's query blocks over tasks only when there are fewer heads than cores; each split then needs
        // its own dK/dV partial, summed afterwards.
        int chunksPerHead = Math.Min(blocksPerHead, Math.Max(1, (CpuParallel.ThreadCount + headsInAllBatches - 1) / headsInAllBatches));
        int tasks = headsInAllBatches * chunksPerHead;
        long partialFloats = (long)keyRows * (qkDim + valueDim);
        float[]? partials = chunksPerHead > 1 ? GC.AllocateUninitializedArray<float>(checked((int)(tasks * partialFloats)), pinned: true) : null;
        float* partialBase = partials is null ? null : (float*)Marshal.UnsafeAddrOfPinnedArrayElement(partials, 0);

        float* qBase = CpuBackend.Base(q), kBase = CpuBackend.Base(k), vBase = CpuBackend.Base(v), doBase = CpuBackend.Base(dOut);
        float* dqBase = CpuBackend.Base(dq), dkBase = CpuBackend.Base(dk), dvBase = CpuBackend.Base(dv);
        GemmKernel kernel = CpuGemm.BestKernel;

        Action<int> body = task =>
        {
            int chunk = task % chunksPerHead;
            int head = task / chunksPerHead % heads;
            int batch = task / (chunksPerHead * heads);
            int firstBlock = (int)((long)blocksPerHead * chunk / chunksPerHead);
            int endBlock = (int)((long)blocksPerHead * (chunk + 1) / chunksPerHead);

            Scratch scratch = Scratch.ForCurrentThread(
                CpuGemm.PackedWholeBFloats(keyRows, qkDim, kernel),
                CpuGemm.PackedWholeBFloats(keyRows, valueDim, kernel),
                CpuGemm.PackedWholeBFloats(qkDim, keyRows, kernel),
                (long)blockRows * keyRows);
            float* headKeys = kBase + batch * k.BatchStride + head * qkDim;
            float* headValues = vBase + batch * v.BatchStride + head * valueDim;
            CpuGemm.PackWholeB(headKeys, k.RowStride, bIsKByN: false, keyRows, qkDim, kernel, scratch.KeysForScores);
            CpuGemm.PackWholeB(headValues, v.RowStride, bIsKByN: false, keyRows, valueDim, kernel, scratch.ValuesForGradients);
            CpuGemm.PackWholeB(headKeys, k.RowStride, bIsKByN: true, qkDim, keyRows, kernel, scratch.KeysForQueryGradients);

            float* keyGradient, valueGradient;
            long keyGradientStride, valueGradientStride;
            if (partials is null)
            {
                keyGradient = dkBase + batch * dk.BatchStride + head * qkDim;
                valueGradient = dvBase + batch * dv.BatchStride + head * valueDim;
                keyGradientStride = dk.RowStride;
                valueGradientStride = dv.RowStride;
            }
            else
            {
                keyGradient = partialBase + task * partialFloats;
                valueGradient = keyGradient + (long)keyRows * qkDim;
                keyGradientStride = qkDim;
                valueGradientStride = valueDim;
            }

            for (int block = firstBlock; block < endBlock; block++)
            {
                int row0 = block * blockRows;
                int rows = Math.Min(blockRows, queryRows - row0);
                var blockPointers = new BlockPointers
                {
                    Queries = qBase + batch * q.BatchStride + row0 * q.RowStride + head * qkDim, QueryStride = q.RowStride,
                    OutputGradient = doBase + batch * dOut.BatchStride + row0 * dOut.RowStride + head * valueDim, OutputGradientStride = dOut.RowStride,
                    QueryGradient = dqBase + batch * dq.BatchStride + row0 * dq.RowStride + head * qkDim, QueryGradientStride = dq.RowStride,
                    KeyGradient = keyGradient, KeyGradientStride = keyGradientStride,
                    ValueGradient = valueGradient, ValueGradientStride = valueGradientStride,
                };
                BackwardBlock(blockPointers, scratch, rows, keyRows, qkDim, valueDim, scale, firstBlockOfTask: block == firstBlock, kernel);
            }
        };

        long flops = 2L * batches * heads * queryRows * keyRows * (3L * qkDim + 2L * valueDim);
        if (flops < 4_000_000)
            for (int t = 0; t < tasks; t++) body(t);
        else
            CpuParallel.ForTasks(tasks, body);

        if (partials is not null)
            SumPartials(partialBase, partialFloats, chunksPerHead, dk, dv, batches, heads, keyRows, qkDim, valueDim);
    }

    private static int QueryBlockRows(int keyRows)
    {
        // A multiple of the 12-row micro-panel; at least 48 rows, since the block's rows are the reduction length
        // of the dK and dV products and shorter reductions spend their time loading and storing C.
        int rows = ScoreBlocksBytes / (2 * Math.Max(1, keyRows) * sizeof(float));
        return Math.Clamp(rows / 12 * 12, 48, 192);
    }

    /// <summary>Where one query block's operands and gradients live (row strides in elements).</summary>
    private struct BlockPointers
    {
        public float* Queries, OutputGradient, QueryGradient, KeyGradient, ValueGradient;
        public long QueryStride, OutputGradientStride, QueryGradientStride, KeyGradientStride, ValueGradientStride;
    }

    private static void BackwardBlock(in BlockPointers p, Scratch scratch, int rows, int keyRows, int qkDim, int valueDim,
        float scale, bool firstBlockOfTask, GemmKernel kernel)
    {
        float* probabilities = scratch.Probabilities, scoreGradients = scratch.ScoreGradients;

        // P = softmax(Q·Kᵀ·scale), recomputed as the forward computes it (max-subtracted in the scaled domain).
        CpuGemm.MultiplyPrepacked(p.Queries, p.QueryStride, rows, scratch.KeysForScores, keyRows, qkDim, probabilities, keyRows, kernel);
        for (int r = 0; r < rows; r++)
        {
            float* row = probabilities + (long)r * keyRows;
            CpuVector.Scale(row, scale, keyRows);
            float max = CpuVector.Max(row, keyRows);
            float sum = CpuVector.ExpScaledInPlace(row, 1f, max, keyRows);
            CpuVector.Scale(row, 1f / sum, keyRows);
        }

        // dP = dO·Vᵀ, then dS in place.
        CpuGemm.MultiplyPrepacked(p.OutputGradient, p.OutputGradientStride, rows, scratch.ValuesForGradients, keyRows, valueDim,
            scoreGradients, keyRows, kernel);
        for (int r = 0; r < rows; r++)
            CpuBackwardKernels.SoftmaxBackward(probabilities + (long)r * keyRows, scoreGradients + (long)r * keyRows, scale, keyRows);

        // The task's first block assigns dK and dV, later blocks add to them.
        float beta = firstBlockOfTask ? 0f : 1f;
        var valueProduct = new GeneralGemmProblem(keyRows, valueDim, rows, probabilities, keyRows, aTransposed: true,
            p.OutputGradient, p.OutputGradientStride, bTransposed: false, p.ValueGradient, p.ValueGradientStride, alpha: 1f, beta);
        CpuGemm.MultiplyGeneralBlocked(valueProduct, kernel, 0, keyRows, 0, valueDim);
        var keyProduct = new GeneralGemmProblem(keyRows, qkDim, rows, scoreGradients, keyRows, aTransposed: true,
            p.Queries, p.QueryStride, bTransposed: false, p.KeyGradient, p.KeyGradientStride, alpha: 1f, beta);
        CpuGemm.MultiplyGeneralBlocked(keyProduct, kernel, 0, keyRows, 0, qkDim);

        CpuGemm.MultiplyPrepacked(scoreGradients, keyRows, rows, scratch.KeysForQueryGradients, qkDim, keyRows,
            p.QueryGradient, p.QueryGradientStride, kernel);
    }

    /// <summary>dk and dv of each head = the sum of its chunks' partials (chunk order fixed, so results are reproducible).</summary>
    private static void SumPartials(float* partialBase, long partialFloats, int chunksPerHead, View dk, View dv,
        int batches, int heads, int keyRows, int qkDim, int valueDim)
    {
        float* dkBase = CpuBackend.Base(dk), dvBase = CpuBackend.Base(dv);
        CpuParallel.ForRanges(batches * heads, (long)chunksPerHead * partialFloats, (start, end) =>
        {
            for (int headTask = start; headTask < end; headTask++)
            {
                int batch = headTask / heads, head = headTask % heads;
                float* firstPartial = partialBase + (long)headTask * chunksPerHead * partialFloats;
                for (int r = 0; r < keyRows; r++)
                {
                    float* keyRow = dkBase + batch * dk.BatchStride + r * dk.RowStride + head * qkDim;
                    float* valueRow = dvBase + batch * dv.BatchStride + r * dv.RowStride + head * valueDim;
                    long keyOffset = (long)r * qkDim, valueOffset = (long)keyRows * qkDim + (long)r * valueDim;
                    Buffer.MemoryCopy(firstPartial + keyOffset, keyRow, qkDim * sizeof(float), qkDim * sizeof(float));
                    Buffer.MemoryCopy(firstPartial + valueOffset, valueRow, valueDim * sizeof(float), valueDim * sizeof(float));
                    for (int chunk = 1; chunk < chunksPerHead; chunk++)
                    {
                        float* partial = firstPartial + chunk * partialFloats;
                        CpuBackwardKernels.Accumulate(keyRow, partial + keyOffset, qkDim);
                        CpuBackwardKernels.Accumulate(valueRow, partial + valueOffset, valueDim);
                    }
                }
            }
        });
    }

    private static void ClearHeads(View gradient, int batches, int heads, int headWidth)
    {
        float* gradientBase = CpuBackend.Base(gradient);
        for (int b = 0; b < batches; b++)
            for (int r = 0; r < gradient.Rows; r++)
                new Span<float>(gradientBase + b * gradient.BatchStride + r * gradient.RowStride, heads * headWidth).Clear();
    }

    /// <summary>One thread's packed head and score blocks, grown on demand and kept for the thread's life.</summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? t_current;

        private readonly float*[] _buffers = new float*[5];
        private readonly long[] _capacities = new long[5];

        public float* KeysForScores => _buffers[0];
        public float* ValuesForGradients => _buffers[1];
        public float* KeysForQueryGradients => _buffers[2];
        public float* Probabilities => _buffers[3];
        public float* ScoreGradients => _buffers[4];

        public static Scratch ForCurrentThread(long keysForScores, long valuesForGradients, long keysForQueryGradients, long scoreBlock)
        {
            Scratch scratch = t_current ??= new Scratch();
            scratch.Grow(0, keysForScores);
            scratch.Grow(1, valuesForGradients);
            scratch.Grow(2, keysForQueryGradients);
            scratch.Grow(3, scoreBlock);
            scratch.Grow(4, scoreBlock);
            return scratch;
        }

        private void Grow(int index, long needed)
        {
            if (_capacities[index] >= needed && _buffers[index] != null) return;
            if (_buffers[index] != null) NativeMemory.AlignedFree(_buffers[index]);
            _capacities[index] = Math.Max(needed, 16);
            _buffers[index] = (float*)NativeMemory.AlignedAlloc((nuint)(_capacities[index] * sizeof(float)), 64);
        }
    }
}
