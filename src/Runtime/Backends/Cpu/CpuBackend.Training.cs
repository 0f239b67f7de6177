using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// The training ops on the CPU: products on the packed GEMM (transposes are packing choices), row backward kernels split
/// over rows, per-sample reductions split over column chunks so no two threads add to the same sum.
/// </summary>
public sealed unsafe partial class CpuBackend : ITrainingBackend
{
    public void Gemm(View c, View a, bool transposeA, View b, bool transposeB, float alpha, float beta)
    {
        var (m, n, k, products, sumOverBatches) = ViewRules.GemmSizes(c, a, transposeA, b, transposeB);
        if (b.Tensor is CpuQuantizedTensor quantized)
        {
            GemmWithQuantizedWeight(c, a, transposeA, b, quantized, transposeB, alpha, beta, m, products, sumOverBatches);
            return;
        }
        ViewRules.RequireDistinctOutputElements(c, nameof(c));
        RequireInside(a, nameof(a));
        RequireInside(b, nameof(b));
        RequireInside(c, nameof(c));
        ViewRules.RequireDisjoint(c, a, nameof(a));
        ViewRules.RequireDisjoint(c, b, nameof(b));
        if (c.ElementCount == 0) return;

        float* aBase = Base(a), bBase = Base(b), cBase = Base(c);
        long aStride = a.Batch == 1 ? 0 : a.BatchStride, bStride = b.Batch == 1 ? 0 : b.BatchStride;
        GemmKernel kernel = CpuGemm.BestKernel;

        // One larger product where the batches lie as consecutive rows: dx = dy·W over a batch becomes one product with
        // Batch·M rows, dW = Σ dyᵀ·x one with Batch·K reduction rows.
        if (products > 1 && !sumOverBatches && !transposeA && bStride == 0 && a.BatchesStackAsRows && c.BatchesStackAsRows)
        {
            CpuGemm.MultiplyGeneral(new GeneralGemmProblem(products * m, n, k, aBase, a.RowStride, false, bBase, b.RowStride, transposeB,
                cBase, c.RowStride, alpha, beta), kernel, parallel: true);
            return;
        }
        if (sumOverBatches && transposeA && !transposeB && aStride != 0 && bStride != 0 && a.BatchesStackAsRows && b.BatchesStackAsRows)
        {
            CpuGemm.MultiplyGeneral(new GeneralGemmProblem(m, n, products * k, aBase, a.RowStride, true, bBase, b.RowStride, false,
                cBase, c.RowStride, alpha, beta), kernel, parallel: true);
            return;
        }
        for (int i = 0; i < products; i++)
        {
            float* cBatch = sumOverBatches ? cBase : cBase + i * c.BatchStride;
            // Summed batches: the first product applies beta, the rest add.
            float batchBeta = sumOverBatches && i > 0 ? 1f : beta;
            CpuGemm.MultiplyGeneral(new GeneralGemmProblem(m, n, k, aBase + i * aStride, a.RowStride, transposeA,
                bBase + i * bStride, b.RowStride, transposeB, cBatch, c.RowStride, alpha, batchBeta), kernel, parallel: true);
        }
    }

    /// <summary>
    /// The products a linear layer's backward runs on a weight held quantized: dx = dy·W (and y = x·Wᵀ), with the weight
    /// as a whole (View.Of(weight)) and one product per batch of a.
    /// </summary>
    private void GemmWithQuantizedWeight(View c, View a, bool transposeA, View b, CpuQuantizedTensor w, bool transposeB, float alpha, float beta,
        int m, int products, bool sumOverBatches)
    {
        if (w.IsDisposed) throw new ObjectDisposedException(nameof(b), $"{w} was disposed");
        QuantizedWeights.RequireWholeProductOperand(w, b, transposeA, sumOverBatches);
        ViewRules.RequireDistinctOutputElements(c, nameof(c));
        RequireInside(a, nameof(a));
        RequireInside(c, nameof(c));
        ViewRules.RequireDisjoint(c, a, nameof(a));
        if (c.ElementCount == 0) return;

        void Product(int rows, float* aRows, float* cRows)
        {
            if (transposeB) CpuQuantizedGemm.MultiplyTransposed(rows, aRows, a.RowStride, w, cRows, c.RowStride, null, alpha, beta);
            else CpuQuantizedGemm.Multiply(rows, aRows, a.RowStride, w, cRows, c.RowStride, alpha, beta);
        }

        float* aBase = Base(a), cBase = Base(c);
        if (a.BatchesStackAsRows && c.BatchesStackAsRows)
        {
            Product(products * m, aBase, cBase);
            return;
        }
        for (int i = 0; i < products; i++) Product(m, aBase + i * a.BatchStride, cBase + i * c.BatchStride);
    }

    public void SumRows(View y, View x, float beta)
    {
        if (y.Rows != 1 || y.Cols != x.Cols || (y.Batch != x.Batch && y.Batch != 1))
            throw new ArgumentException($"{y} must be [{x.Batch} or 1, 1, {x.Cols}] to hold the row sums of {x}", nameof(y));
        ViewRules.RequireDistinctOutputElements(y, nameof(y));
        RequireInside(y, nameof(y));
        RequireInside(x, nameof(x));
        ViewRules.RequireDisjoint(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int batchesPerSum = y.Batch == x.Batch ? 1 : x.Batch, rows = x.Rows;
        ForColumnChunks(y.Batch, x.Cols, (long)batchesPerSum * rows, (output, c0, width, sum) =>
        {
            for (int batch = output * batchesPerSum; batch < (output + 1) * batchesPerSum; batch++)
                for (int r = 0; r < rows; r++) CpuBackwardKernels.Accumulate(sum, xs[batch * rows + r] + c0, width);
            CpuBackwardKernels.StoreWithBeta(ys[output] + c0, sum, beta, width);
        });
    }

    public void LayerNormBackward(View dx, View dy, View x, float eps)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x);
        int n = x.Cols;
        if (n == 0) return;
        CpuParallel.ForRanges(dxs.Count, 3L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuBackwardKernels.LayerNormBackward(dxs[i], dys[i], xs[i], n, eps);
        });
    }

    public void RmsNormBackward(View dx, View dy, View x, DeviceTensor scale, int groupSize, float eps)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        CpuTensor s = AsCpu(scale, nameof(scale));
        if (groupSize <= 0 || x.Cols % groupSize != 0)
            throw new ArgumentException($"{x.Cols} columns do not split into groups of {groupSize}", nameof(groupSize));
        if (s.Length != groupSize) throw new ArgumentException($"scale {s} does not have {groupSize} elements", nameof(scale));
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x);
        int n = x.Cols;
        float* scalePointer = s.Pointer;
        CpuParallel.ForRanges(dxs.Count, 3L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuBackwardKernels.RmsNormBackward(dxs[i], dys[i], xs[i], scalePointer, groupSize, n, eps);
        });
    }

    public void ModulateBackward(View dx, View dShift, View dScale, View dy, View x, View scale)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        RequireSameShape(dx, scale, nameof(scale));
        RequirePerSampleVector(dShift, x, nameof(dShift), dx, dy, scale);
        RequirePerSampleVector(dScale, x, nameof(dScale), dx, dy, scale, dShift);
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x), scales = new(scale);
        float* shiftBase = Base(dShift), scaleBase = Base(dScale);
        long shiftStride = dShift.RowStride, scaleStride = dScale.RowStride;
        int rows = x.Rows;
        ForColumnChunks(x.Batch, x.Cols, 3L * rows, (batch, c0, width, sums) =>
        {
            float* shiftSum = sums, scaleSum = sums + width;
            for (int r = 0; r < rows; r++)
            {
                int i = batch * rows + r;
                CpuBackwardKernels.ModulateBackward(dxs[i] + c0, dys[i] + c0, xs[i] + c0, scales[i] + c0, shiftSum, scaleSum, width);
            }
            CpuBackwardKernels.StoreWithBeta(shiftBase + batch * shiftStride + c0, shiftSum, 0f, width);
            CpuBackwardKernels.StoreWithBeta(scaleBase + batch * scaleStride + c0, scaleSum, 0f, width);
        }, sumsPerChunk: 2);
    }

    public void GatedResidualBackward(View dx, View dGate, View dy, View x, View gate)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        RequireSameShape(dx, gate, nameof(gate));
        RequirePerSampleVector(dGate, x, nameof(dGate), dx, dy, gate);
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x), gates = new(gate);
        float* gateBase = Base(dGate);
        long gateStride = dGate.RowStride;
        int rows = x.Rows;
        ForColumnChunks(x.Batch, x.Cols, 2L * rows, (batch, c0, width, gateSum) =>
        {
            for (int r = 0; r < rows; r++)
            {
                int i = batch * rows + r;
                CpuBackwardKernels.GatedResidualBackward(dxs[i] + c0, dys[i] + c0, xs[i] + c0, gates[i] + c0, gateSum, width);
            }
            CpuBackwardKernels.StoreWithBeta(gateBase + batch * gateStride + c0, gateSum, 0f, width);
        });
    }

    public void SiluBackward(View dx, View dy, View x)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x);
        int n = x.Cols;
        CpuParallel.ForRanges(dxs.Count, 4L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuBackwardKernels.SiluBackward(dxs[i], dys[i], xs[i], n);
        });
    }

    public void GeluTanhBackward(View dx, View dy, View x)
    {
        RequireSameShape(dx, dy, nameof(dy));
        RequireSameShape(dx, x, nameof(x));
        RowWalker dxs = new(dx), dys = new(dy), xs = new(x);
        int n = x.Cols;
        CpuParallel.ForRanges(dxs.Count, 6L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuBackwardKernels.GeluTanhBackward(dxs[i], dys[i], xs[i], n);
        });
    }

    public void ApplyRopeBackward(View dx, View dy, View pe, int headDim)
    {
        RequireSameShape(dx, dy, nameof(dy));
        if (headDim <= 0 || headDim % 2 != 0 || dy.Cols % headDim != 0)
            throw new ArgumentException($"{dy.Cols} columns do not split into heads of even width {headDim}", nameof(headDim));
        if (pe.Cols != headDim * 2) throw new ArgumentException($"{pe} must have {headDim / 2}·4 columns", nameof(pe));
        if (pe.Batch != dy.Batch || pe.Rows != dy.Rows) throw new ArgumentException($"{pe} and {dy} differ in batch or rows");
        RequireInside(pe, nameof(pe));
        RowWalker dxs = new(dx), dys = new(dy), pes = new(pe);
        int heads = dy.Cols / headDim;
        CpuParallel.ForRanges(dxs.Count, dy.Cols, (start, end) =>
        {
            float* transposed = stackalloc float[2 * headDim];
            float* diagonal = stackalloc float[headDim];
            float* offDiagonal = stackalloc float[headDim];
            for (int i = start; i < end; i++)
            {
                CpuBackwardKernels.TransposeRopeMatrices(transposed, pes[i], headDim / 2);
                CpuRowKernels.ApplyRope(dxs[i], dys[i], transposed, headDim, heads, diagonal, offDiagonal);
            }
        });
    }

    public void AttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale)
    {
        if (heads <= 0 || q.Cols % heads != 0 || v.Cols % heads != 0)
            throw new ArgumentException($"{heads} heads do not split q ({q.Cols}) and v ({v.Cols}) columns", nameof(heads));
        if (k.Cols != q.Cols) throw new ArgumentException($"keys {k} and queries {q} differ in columns");
        if (q.Batch != k.Batch || q.Batch != v.Batch || q.Batch != dOut.Batch) throw new ArgumentException("q, k, v and dOut differ in batch");
        if (dOut.Rows != q.Rows || dOut.Cols != v.Cols) throw new ArgumentException($"output gradient {dOut} does not match queries {q} and values {v}");
        if (v.Rows != k.Rows) throw new ArgumentException($"values {v} and keys {k} differ in rows");
        if (k.Rows == 0 && q.Rows > 0) throw new ArgumentException("attention over zero keys is undefined");
        RequireSameShape(dq, q, nameof(q));
        RequireSameShape(dk, k, nameof(k));
        RequireSameShape(dv, v, nameof(v));
        RequireInside(dOut, nameof(dOut));
        foreach (View gradient in new[] { dq, dk, dv })
        {
            ViewRules.RequireDistinctOutputElements(gradient, "gradient");
            foreach (View input in new[] { q, k, v, dOut }) ViewRules.RequireDisjoint(gradient, input, "input");
        }
        ViewRules.RequireDisjoint(dq, dk, nameof(dk));
        ViewRules.RequireDisjoint(dq, dv, nameof(dv));
        ViewRules.RequireDisjoint(dk, dv, nameof(dv));
        CpuAttentionBackward.Run(dq, dk, dv, dOut, q, k, v, heads, scale);
    }

    public void AdamWStep(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, int step,
        float lr, float beta1, float beta2, float eps, float weightDecay)
    {
        CpuTensor p = AsCpu(param, nameof(param)), g = AsCpu(grad, nameof(grad)), mean = AsCpu(m, nameof(m)), second = AsCpu(v, nameof(v));
        if (g.Length != p.Length || mean.Length != p.Length || second.Length != p.Length)
            throw new ArgumentException($"AdamW needs equal lengths: param {p}, grad {g}, m {mean}, v {second}");
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "steps count from 1");
        if (ReferenceEquals(p, g) || ReferenceEquals(p, mean) || ReferenceEquals(p, second) || ReferenceEquals(g, mean)
            || ReferenceEquals(g, second) || ReferenceEquals(mean, second))
            throw new ArgumentException("param, grad, m and v must be four different tensors");
        AdamWScalars scalars = AdamWScalars.For(step, lr, beta1, beta2, eps, weightDecay);
        float* pp = p.Pointer, gp = g.Pointer, mp = mean.Pointer, vp = second.Pointer;
        CpuParallel.ForRanges(checked((int)p.Length), 8, (start, end) => CpuBackwardKernels.AdamW(pp, gp, mp, vp, start, end, scalars));
    }

    public double SumOfSquares(params View[] views)
    {
        double sum = 0;
        foreach (View x in views) sum += SumOfSquaresOf(x);
        return sum;
    }

    private double SumOfSquaresOf(View x)
    {
        RequireInside(x, nameof(x));
        if (x.ElementCount == 0) return 0;
        float* xBase = Base(x);
        // A partition fixed by the size alone (not by thread timing), summed in order: the same gradients give the
        // same norm on every run and every thread count.
        const long ElementsPerPart = 1 << 16;
        if (x.IsContiguous)
        {
            long count = x.ElementCount;
            int parts = (int)Math.Clamp(count / ElementsPerPart, 1, 256);
            var partials = new double[parts];
            CpuParallel.ForTasks(parts, t =>
            {
                long start = count * t / parts, end = count * (t + 1) / parts;
                partials[t] = CpuBackwardKernels.SumOfSquares(xBase + start, end - start);
            });
            return partials.Sum();
        }
        RowWalker xs = new(x);
        int rows = xs.Count, cols = x.Cols;
        int rowParts = (int)Math.Clamp((long)rows * cols / ElementsPerPart, 1, Math.Min(rows, 256));
        var rowPartials = new double[rowParts];
        CpuParallel.ForTasks(rowParts, t =>
        {
            double sum = 0;
            for (long r = (long)rows * t / rowParts; r < (long)rows * (t + 1) / rowParts; r++) sum += CpuBackwardKernels.SumOfSquares(xs[(int)r], cols);
            rowPartials[t] = sum;
        });
        return rowPartials.Sum();
    }

    /// <summary>A CPU tensor is host memory already: it stays where it is.</summary>
    public void MoveToHost(DeviceTensor tensor) => AsCpu(tensor, nameof(tensor));

    public void MoveToDevice(DeviceTensor tensor) => AsCpu(tensor, nameof(tensor));

    public void Zero(View x)
    {
        RequireInside(x, nameof(x));
        if (x.ElementCount == 0) return;
        if (x.IsContiguous)
        {
            float* xBase = Base(x);
            CpuParallel.ForRanges(checked((int)x.ElementCount), 1, (start, end) => new Span<float>(xBase + start, end - start).Clear());
            return;
        }
        RowWalker xs = new(x);
        int n = x.Cols;
        CpuParallel.ForRanges(xs.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) new Span<float>(xs[i], n).Clear();
        });
    }

    public void Scale(View x, float factor)
    {
        RequireInside(x, nameof(x));
        ViewRules.RequireDistinctOutputElements(x, nameof(x));
        if (x.ElementCount == 0) return;
        if (x.IsContiguous)
        {
            float* xBase = Base(x);
            long count = x.ElementCount;
            CpuParallel.ForRanges(checked((int)count), 1, (start, end) => CpuVector.Scale(xBase + start, factor, end - start));
            return;
        }
        RowWalker xs = new(x);
        int n = x.Cols;
        CpuParallel.ForRanges(xs.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuVector.Scale(xs[i], factor, n);
        });
    }

    /// <summary>
    /// Runs body(output, c0, width, sums) for every output row and chunk of its columns, with <paramref name="sumsPerChunk"/>
    /// zeroed accumulators of width floats each. Each output's sums are split by column, not by row, so every sum has
    /// one owner and needs no merging; chunks are a whole number of vectors and narrow enough to give every core work.
    /// </summary>
    private static void ForColumnChunks(int outputs, int cols, long workPerColumn, ChunkBody body, int sumsPerChunk = 1)
    {
        if (outputs == 0 || cols == 0) return;
        const int MaxChunk = 2048, MinChunk = 64;
        int wantedChunks = Math.Max(1, (4 * CpuParallel.ThreadCount + outputs - 1) / outputs);
        int chunkWidth = Math.Clamp((cols + wantedChunks - 1) / wantedChunks, MinChunk, MaxChunk);
        chunkWidth = (chunkWidth + 15) / 16 * 16;
        int chunksPerOutput = (cols + chunkWidth - 1) / chunkWidth;
        CpuParallel.ForRanges(outputs * chunksPerOutput, workPerColumn * chunkWidth, (start, end) =>
        {
            float* sums = stackalloc float[sumsPerChunk * chunkWidth];
            for (int task = start; task < end; task++)
            {
                int output = Math.DivRem(task, chunksPerOutput, out int chunk);
                int c0 = chunk * chunkWidth, width = Math.Min(chunkWidth, cols - c0);
                new Span<float>(sums, sumsPerChunk * width).Clear();
                body(output, c0, width, sums);
            }
        });
    }

    private delegate void ChunkBody(int output, int c0, int width, float* sums);

    /// <summary>A per-sample gradient vector (<see cref="ViewRules.RequirePerSampleVector"/>) inside its tensor.</summary>
    private static void RequirePerSampleVector(View vector, View x, string name, params View[] otherViews)
    {
        ViewRules.RequirePerSampleVector(vector, x, name, otherViews);
        RequireInside(vector, name);
    }
}
