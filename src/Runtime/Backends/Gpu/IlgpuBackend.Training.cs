using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The training ops (<see cref="ITrainingBackend"/>) on an ILGPU accelerator, on float32 or bf16 activation views alike
/// (every kernel reads and writes through <see cref="Elements"/>: float32 arithmetic, one rounding on the store).
/// Products run on cuBLAS where it is loaded (sgemm and strided-batched sgemm on float32, GemmEx where bf16 takes part)
/// and on <see cref="BackwardKernels.GeneralGemm"/> elsewhere (the simulator, a GPU without libcublas, a view cuBLAS
/// cannot address). Attention's backward is written once over those products (see <see cref="AttentionBackward"/>).
/// Column sums (bias, modulation and gate gradients) are split into row chunks whose partials are added in a fixed
/// order, so gradients are the same on every run.
/// </summary>
public sealed partial class IlgpuBackend : ITrainingBackend
{
    private TrainingKernelSet? trainingKernelSet;

    private TrainingKernelSet TrainingOps =>
        LazyInitializer.EnsureInitialized(ref trainingKernelSet, () => new TrainingKernelSet(accelerator));

    /// <summary>
    /// About how many threads a column sum should run (its rows are split into chunks until there are that many):
    /// enough to fill a GPU; on the simulator small, but still several chunks so the chunked path is what runs.
    /// </summary>
    internal int ColumnSumThreads { get; set; }

    /// <summary>The last AttentionBackward's path: "flash", or "cublas" or "ilgpu" with its chunk count, e.g. "cublas×3".</summary>
    internal string LastAttentionBackwardPath { get; private set; } = "";

    /// <summary>Whether products may run on cuBLAS (tests turn it off to check the ILGPU GEMM kernel on CUDA).</summary>
    internal bool TrainingGemmOnCuBlasEnabled { get; set; } = true;

    // IMemoryStatistics: on a GPU what counts is what the device holds, so the pools' bytes count whether a tensor
    // uses them or they are parked for reuse. Weights are exact allocations outside the pools, except offloaded ones:
    // their arena (the whole budget, allocated once) counts here, since those weights' tensors hold no device bytes.

    public long AllocatedBytes => floatPool.AllocatedBytes + wordPool.AllocatedBytes + OffloadArenaBytes;

    public long PeakAllocatedBytes => floatPool.PeakBytes + wordPool.PeakBytes + OffloadArenaBytes;

    /// <summary>Frees the parked buffers first, so the new high-water mark starts from what tensors hold, not from an earlier pass's cache.</summary>
    public void ResetPeak()
    {
        Synchronize();
        floatPool.Trim();
        wordPool.Trim();
        floatPool.ResetPeak();
        wordPool.ResetPeak();
    }

    internal int ColumnSumThreadTarget => ColumnSumThreads > 0 ? ColumnSumThreads : launch == LaunchShape.Gpu ? GpuColumnSumThreads : 4096;

    /// <summary>The threads a column sum aims at on a GPU (a memory plan sizes the partials with it).</summary>
    internal const int GpuColumnSumThreads = 1 << 17;

    // ---------------------------------------------------------------- products

    public void Gemm(View c, View a, bool transposeA, View b, bool transposeB, float alpha, float beta)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        if (b.Tensor is GpuTensor { IsQuantized: true } quantized)
        {
            GemmWithQuantizedWeight(c, a, transposeA, b, quantized, transposeB, alpha, beta);
            return;
        }
        var (m, n, k, products, sumOverBatches) = ViewRules.GemmSizes(c, a, transposeA, b, transposeB);
        var cTensor = ActivationTensor(c, nameof(c));
        CheckBounds(c, cTensor, nameof(c));
        var aTensor = OwnTensor(a.Tensor, nameof(a));
        CheckBounds(a, aTensor, nameof(a));
        var bTensor = OwnTensor(b.Tensor, nameof(b));
        CheckBounds(b, bTensor, nameof(b));
        ViewRules.RequireDistinctOutputElements(c, nameof(c));
        ViewRules.RequireDisjoint(c, a, nameof(a));
        ViewRules.RequireDisjoint(c, b, nameof(b));
        if (c.ElementCount == 0) return;

        var cOperand = Operand(cTensor, c.Offset, c.BatchStride, c.RowStride);
        if (alpha == 0f || k == 0)
        {
            // Neither a nor b is read: c = beta·c, once even when batches are summed.
            ScaleOrClear(c, beta);
            return;
        }

        var scratch = new List<Action>();
        try
        {
            long aStride = a.Batch == 1 ? 0 : a.BatchStride, bStride = b.Batch == 1 ? 0 : b.BatchStride;
            var aOperand = ProductOperand(a, aTensor, aStride, scratch);
            var bOperand = ProductOperand(b, bTensor, bStride, scratch);

            // One larger product where the batches lie as consecutive rows (as the CPU does): dx = dy·W over a batch
            // is one product with Batch·M rows, dW = Σ dyᵀ·x one with Batch·K reduction rows.
            if (products > 1 && !sumOverBatches && !transposeA && bStride == 0 && StacksAsRows(aOperand, a) && c.BatchesStackAsRows)
                Product(1, 1, products * m, n, k, alpha, aOperand, false, bOperand, transposeB, beta, cOperand);
            else if (sumOverBatches && transposeA && !transposeB && aStride != 0 && bStride != 0 && StacksAsRows(aOperand, a) && StacksAsRows(bOperand, b))
                Product(1, 1, m, n, products * k, alpha, aOperand, true, bOperand, false, beta, cOperand);
            else
                Product(sumOverBatches ? 1 : products, sumOverBatches ? products : 1, m, n, k, alpha,
                    aOperand, transposeA, bOperand, transposeB, beta, cOperand);
        }
        finally
        {
            // Safe to reuse at once: later work on the same stream runs after these products.
            foreach (var release in scratch) release();
        }
    }

    /// <summary>Whether an operand's batches lie as consecutive rows of one matrix.</summary>
    private static bool StacksAsRows(DeviceOperand operand, View view) =>
        view.Batch == 1 || operand.BatchStride == view.Rows * operand.RowStride;

    /// <summary>
    /// A product operand in its own storage (float32, or bf16 words: activations in bf16 precision, bf16 weights), which
    /// both product paths read; an f16 weight widened into a float32 scratch copy of the whole tensor (so the view's
    /// offsets stay valid). <see cref="Product"/> converts what cuBLAS cannot mix.
    /// </summary>
    private DeviceOperand ProductOperand(View view, GpuTensor tensor, long batchStride, List<Action> scratch)
    {
        if (tensor.DType is DType.F32 or DType.BF16)
            return Operand(tensor, view.Offset, batchStride, view.RowStride);
        var wide = floatPool.Rent(tensor.Length);
        scratch.Add(() => floatPool.Return(wide));
        WidenWords(wide.View.SubView(0, tensor.Length).AsContiguous(), tensor.Words, tensor.DType);
        return new DeviceOperand(wide.View.AsContiguous(), wide.NativePtr, sizeof(float), CuBlasNative.DataFloat32,
            view.Offset, batchStride, view.RowStride);
    }

    /// <summary>A float32 or bf16 tensor's elements as a product operand.</summary>
    private static DeviceOperand Operand(GpuTensor tensor, long offset, long batchStride, long rowStride) =>
        tensor.DType == DType.BF16
            ? new(Elements.BFloat16(tensor.Words), tensor.DevicePointer(0), sizeof(ushort), CuBlasNative.DataBFloat16, offset, batchStride, rowStride)
            : new(tensor.Floats, tensor.DevicePointer(0), sizeof(float), CuBlasNative.DataFloat32, offset, batchStride, rowStride);

    private static DeviceOperand Operand(MemoryBuffer1D<float, Stride1D.Dense> buffer, long offset, long batchStride, long rowStride) =>
        new(buffer.View.AsContiguous(), buffer.NativePtr, sizeof(float), CuBlasNative.DataFloat32, offset, batchStride, rowStride);

    /// <summary>
    /// A row-major matrix operand of <see cref="Product"/>: element (product p, row r, column q) at
    /// Offset + p·BatchStride + r·RowStride + q of Data (ILGPU) or, in bytes, of Base (cuBLAS).
    /// </summary>
    private readonly record struct DeviceOperand(Elements Data, IntPtr Base, int ElementBytes, int CudaType,
        long Offset, long BatchStride, long RowStride)
    {
        public IntPtr At(long element) => Base + checked((nint)((Offset + element) * ElementBytes));
        public bool IsFloat32 => CudaType == CuBlasNative.DataFloat32;
    }

    /// <summary>
    /// Whether cuBLAS multiplies in bf16 (GemmEx: bf16 a and b, float32 accumulation, c in its own storage): for a bf16
    /// output, and in <see cref="GpuPrecision.BFloat16"/> wherever a bf16 operand takes part, as autocast does. Otherwise
    /// sgemm on float32 operands, a bf16 weight widened exactly (float32 precision keeps the CPU's results).
    /// </summary>
    private bool MultipliesInBFloat16(DeviceOperand a, DeviceOperand b, DeviceOperand c) =>
        !c.IsFloat32 || Precision == GpuPrecision.BFloat16 && (!a.IsFloat32 || !b.IsFloat32);

    /// <summary>
    /// An operand of a cuBLAS product in the storage the product takes: itself, or a dense copy (rounded to bf16 — a small
    /// float32 LoRA factor or trained weight beside bf16 activations, as autocast casts it — or widened) in a scratch
    /// buffer released with <paramref name="scratch"/>. <paramref name="matrices"/> stored [rows, cols] matrices at its
    /// batch stride (one where the stride is 0).
    /// </summary>
    private DeviceOperand InStorage(DeviceOperand operand, bool bf16, int matrices, int rows, int cols, List<Action> scratch)
    {
        if (operand.IsFloat32 != bf16) return operand;
        if (operand.BatchStride == 0) matrices = 1;
        long count = (long)matrices * rows * cols;
        int launchCount = (int)CheckedCount(count);
        var source = new StridedMatrix(operand.Offset, rows, operand.BatchStride, operand.RowStride);
        var dense = new StridedMatrix(0, rows, (long)rows * cols, cols);
        long batchStride = matrices == 1 ? 0 : (long)rows * cols;
        if (bf16)
        {
            var words = wordPool.Rent(Math.Max(count, 1));
            scratch.Add(() => wordPool.Return(words));
            var data = Elements.BFloat16(words.View.AsContiguous());
            if (count > 0) kernels.Copy(launchCount, cols, dense, data, source, operand.Data);
            return new DeviceOperand(data, words.NativePtr, sizeof(ushort), CuBlasNative.DataBFloat16, 0, batchStride, cols);
        }
        var floats = floatPool.Rent(Math.Max(count, 1));
        scratch.Add(() => floatPool.Return(floats));
        if (count > 0) kernels.Copy(launchCount, cols, dense, floats.View.AsContiguous(), source, operand.Data);
        return Operand(floats, 0, batchStride, cols);
    }

    /// <summary>
    /// outputs × sumCount row-major products: c_o = alpha·Σ_s op(a_p)·op(b_p) + beta·c_o with p = o·sumCount + s, each
    /// [M, N] = [M, K]·[K, N] after the transposes, every operand float32 or bf16. cuBLAS when loaded and every operand is
    /// addressable by it (see <see cref="MultipliesInBFloat16"/> for its storage), else the ILGPU kernel, which reads each
    /// operand in its own storage and rounds c once on the store. alpha ≠ 0 and K > 0 here.
    /// </summary>
    private void Product(int outputs, int sumCount, int m, int n, int k, float alpha,
        DeviceOperand a, bool transposeA, DeviceOperand b, bool transposeB, float beta, DeviceOperand c)
    {
        int aRows = transposeA ? k : m, aCols = transposeA ? m : k;
        int bRows = transposeB ? n : k, bCols = transposeB ? k : n;
        if (cublas is not null && TrainingGemmOnCuBlasEnabled
            && LeadingDimension(a, aRows, aCols) > 0 && LeadingDimension(b, bRows, bCols) > 0 && LeadingDimension(c, m, n) > 0)
        {
            bool bf16 = MultipliesInBFloat16(a, b, c);
            var scratch = new List<Action>();
            try
            {
                int matrices = outputs * sumCount;
                ProductOnCuBlas(outputs, sumCount, m, n, k, alpha, InStorage(a, bf16, matrices, aRows, aCols, scratch), transposeA,
                    InStorage(b, bf16, matrices, bRows, bCols, scratch), transposeB, beta, c);
            }
            finally
            {
                // Safe to reuse at once: later work on the same stream runs after the product.
                foreach (var release in scratch) release();
            }
            return;
        }
        int side = launch.GemmThreadsPerSide;
        var grid = new Index3D((n + 4 * side - 1) / (4 * side), (m + 4 * side - 1) / (4 * side), outputs);
        TrainingOps.GeneralGemm(new KernelConfig(grid, new Index3D(side, side, 1)),
            new GemmShape(m, n, k, sumCount, transposeA, transposeB, alpha, beta),
            new GemmOperand(a.Offset, a.BatchStride, a.RowStride), a.Data,
            new GemmOperand(b.Offset, b.BatchStride, b.RowStride), b.Data,
            new GemmOperand(c.Offset, c.BatchStride, c.RowStride), c.Data);
    }

    /// <summary>The leading dimension cuBLAS gets for a stored [rows, cols] operand, or 0 when it cannot take it.</summary>
    private static int LeadingDimension(DeviceOperand operand, int rows, int cols)
    {
        if (rows <= 1) return Math.Max(cols, 1);
        return operand.RowStride >= cols && operand.RowStride <= int.MaxValue ? (int)Math.Max(operand.RowStride, 1) : 0;
    }

    /// <summary>
    /// cuBLAS is column-major: a row-major [R, C] matrix with row stride ld is its column-major [C, R] transpose. So
    /// C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ: gemm(transB, transA, N, M, K, B, A, C), where a row-major
    /// operand that is not transposed is already the column-major transpose the call wants (op N), and a
    /// transposed one is op T. Summed products run one after another, the first applying beta and the rest adding.
    /// </summary>
    private void ProductOnCuBlas(int outputs, int sumCount, int m, int n, int k, float alpha,
        DeviceOperand a, bool transposeA, DeviceOperand b, bool transposeB, float beta, DeviceOperand c)
    {
        int lda = LeadingDimension(a, transposeA ? k : m, transposeA ? m : k);
        int ldb = LeadingDimension(b, transposeB ? n : k, transposeB ? k : n);
        int ldc = LeadingDimension(c, m, n);
        int opA = transposeB ? CuBlasNative.OperationTranspose : CuBlasNative.OperationNone;
        int opB = transposeA ? CuBlasNative.OperationTranspose : CuBlasNative.OperationNone;
        bool float32 = a.IsFloat32 && b.IsFloat32 && c.IsFloat32;
        for (int s = 0; s < sumCount; s++)
        {
            float stepBeta = s == 0 ? beta : 1f;
            IntPtr bPointer = b.At(s * b.BatchStride), aPointer = a.At(s * a.BatchStride), cPointer = c.At(0);
            long strideB = sumCount * b.BatchStride, strideA = sumCount * a.BatchStride;
            if (outputs == 1)
            {
                if (float32)
                    cublas!.Sgemm(opA, opB, n, m, k, alpha, bPointer, ldb, aPointer, lda, stepBeta, cPointer, ldc);
                else
                    cublas!.GemmEx(opA, opB, n, m, k, alpha, bPointer, b.CudaType, ldb, aPointer, a.CudaType, lda,
                        stepBeta, cPointer, c.CudaType, ldc);
            }
            else if (float32)
            {
                cublas!.SgemmStridedBatched(opA, opB, n, m, k, alpha, bPointer, ldb, strideB, aPointer, lda, strideA,
                    stepBeta, cPointer, ldc, c.BatchStride, outputs);
            }
            else
            {
                cublas!.GemmStridedBatchedEx(opA, opB, n, m, k, alpha, bPointer, b.CudaType, ldb, strideB,
                    aPointer, a.CudaType, lda, strideA, stepBeta, cPointer, c.CudaType, ldc, c.BatchStride,
                    outputs, CuBlasNative.ComputeFloat32);
            }
        }
    }

    /// <summary>x = beta·x, or 0 without reading x when beta is 0.</summary>
    private void ScaleOrClear(View x, float beta)
    {
        var (count, layout, data) = Output(x);
        if (count == 0 || beta == 1f) return;
        if (beta == 0f)
            Zero(x);
        else
            TrainingOps.ScaleInPlace(count, x.Cols, beta, layout, data);
    }

    // ---------------------------------------------------------------- column sums

    public void SumRows(View y, View x, float beta)
    {
        if (y.Rows != 1 || y.Cols != x.Cols || (y.Batch != x.Batch && y.Batch != 1))
            throw new ArgumentException($"SumRows: {y} must be [{x.Batch} or 1, 1, {x.Cols}] to hold the row sums of {x}", nameof(y));
        var (_, ys, yd) = Output(y);
        var (xs, xd) = Strided(x, nameof(x));
        ViewRules.RequireDistinctOutputElements(y, nameof(y));
        ViewRules.RequireDisjoint(y, x, nameof(x));
        if (y.ElementCount == 0) return;
        int rowsPerOutput = checked(x.Batch / y.Batch * x.Rows);
        var shape = ChunksFor(y.Batch, x.Cols, rowsPerOutput, sums: 1);
        var partials = floatPool.Rent(Math.Max(shape.PartialsPerSum, 1));
        try
        {
            TrainingOps.SumRowsPartials((int)CheckedCount(shape.PartialsPerSum), shape, xs, xd, partials.View.AsContiguous());
            var yLayout = new StridedMatrix(y.Offset, 1, y.BatchStride, y.RowStride);
            TrainingOps.FinishColumnSums((int)CheckedCount(y.ElementCount), shape, 0, beta, yLayout, yd, partials.View.AsContiguous());
        }
        finally
        {
            floatPool.Return(partials);
        }
    }

    /// <summary>
    /// Splits each output's rows into chunks so that outputs·chunks·cols threads reach about
    /// <see cref="ColumnSumThreads"/>. With no rows there is one (empty) chunk, whose partial is 0.
    /// </summary>
    private ColumnChunks ChunksFor(int outputs, int cols, int rowsPerOutput, int sums)
    {
        var shape = GpuMemoryPolicy.ColumnChunks(ColumnSumThreadTarget, outputs, cols, rowsPerOutput);
        CheckedCount(shape.PartialsPerSum * sums);
        return shape;
    }

    public void ModulateBackward(View dx, View dShift, View dScale, View dy, View x, View scale)
    {
        var (_, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        var (xs, xd) = SameShapeOperand(x, dx, nameof(x));
        var (scales, scaled) = SameShapeOperand(scale, dx, nameof(scale));
        var (shiftLayout, shiftData) = PerSampleVector(dShift, x, nameof(dShift), dx, dy, scale);
        var (scaleLayout, scaleData) = PerSampleVector(dScale, x, nameof(dScale), dx, dy, scale, dShift);
        if (x.Batch == 0 || x.Cols == 0) return;
        var shape = ChunksFor(x.Batch, x.Cols, x.Rows, sums: 2);
        var partials = floatPool.Rent(Math.Max(2 * shape.PartialsPerSum, 1));
        try
        {
            var partialView = partials.View.AsContiguous();
            TrainingOps.ModulateBackwardPartials((int)shape.PartialsPerSum, shape, dxs, dxd, dys, dyd, xs, xd, scales, scaled, partialView);
            int count = (int)CheckedCount((long)x.Batch * x.Cols);
            TrainingOps.FinishColumnSums(count, shape, 0, 0f, shiftLayout, shiftData, partialView);
            TrainingOps.FinishColumnSums(count, shape, 1, 0f, scaleLayout, scaleData, partialView);
        }
        finally
        {
            floatPool.Return(partials);
        }
    }

    public void GatedResidualBackward(View dx, View dGate, View dy, View x, View gate)
    {
        var (_, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        var (xs, xd) = SameShapeOperand(x, dx, nameof(x));
        var (gates, gated) = SameShapeOperand(gate, dx, nameof(gate));
        var (gateLayout, gateData) = PerSampleVector(dGate, x, nameof(dGate), dx, dy, gate);
        if (x.Batch == 0 || x.Cols == 0) return;
        var shape = ChunksFor(x.Batch, x.Cols, x.Rows, sums: 1);
        var partials = floatPool.Rent(Math.Max(shape.PartialsPerSum, 1));
        try
        {
            var partialView = partials.View.AsContiguous();
            TrainingOps.GatedResidualBackwardPartials((int)shape.PartialsPerSum, shape, dxs, dxd, dys, dyd, xs, xd, gates, gated, partialView);
            TrainingOps.FinishColumnSums((int)CheckedCount((long)x.Batch * x.Cols), shape, 0, 0f, gateLayout, gateData, partialView);
        }
        finally
        {
            floatPool.Return(partials);
        }
    }

    /// <summary>
    /// A per-sample gradient vector (<see cref="ViewRules.RequirePerSampleVector"/>) as a layout whose flat row is the
    /// sample.
    /// </summary>
    private (StridedMatrix Layout, Elements Data) PerSampleVector(View vector, View x, string name, params View[] others)
    {
        ViewRules.RequirePerSampleVector(vector, x, name, others);
        var (_, data) = Strided(vector, name);
        return (new StridedMatrix(vector.Offset, vector.Rows, 0, vector.RowStride), data);
    }

    // ---------------------------------------------------------------- row backward ops

    public void LayerNormBackward(View dx, View dy, View x, float eps)
    {
        var (count, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        var (xs, xd) = SameShapeOperand(x, dx, nameof(x));
        if (count == 0) return;
        int rows = checked(dx.Batch * dx.Rows);
        int group = GroupSizeFor(dx.Cols, Math.Min(launch.RowGroup, BackwardKernels.MaxGroupSize));
        TrainingOps.LayerNormBackward(new KernelConfig(rows, group), dx.Cols, eps, dxs, dxd, dys, dyd, xs, xd);
    }

    public void RmsNormBackward(View dx, View dy, View x, DeviceTensor scale, int groupSize, float eps)
    {
        var (count, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        var (xs, xd) = SameShapeOperand(x, dx, nameof(x));
        if (groupSize <= 0 || dx.Cols % groupSize != 0)
            throw new ArgumentException($"RmsNormBackward: {dx.Cols} columns do not split into groups of {groupSize}", nameof(groupSize));
        var scaleTensor = OwnTensor(scale, nameof(scale)).AsFloat32();
        if (scaleTensor.Length != groupSize)
            throw new ArgumentException($"RmsNormBackward: scale {scaleTensor} does not have {groupSize} elements", nameof(scale));
        if (count == 0) return;
        int groupsPerRow = dx.Cols / groupSize;
        int groups = checked(dx.Batch * dx.Rows * groupsPerRow);
        int group = GroupSizeFor(groupSize, Math.Min(launch.RowGroup, BackwardKernels.MaxGroupSize));
        TrainingOps.RmsNormBackward(new KernelConfig(groups, group), groupSize, groupsPerRow, eps, dxs, dxd, dys, dyd, xs, xd, scaleTensor.Floats);
    }

    public void SiluBackward(View dx, View dy, View x) => ElementwiseBackward(TrainingOps.SiluBackward, dx, dy, x);

    public void GeluTanhBackward(View dx, View dy, View x) => ElementwiseBackward(TrainingOps.GeluTanhBackward, dx, dy, x);

    private void ElementwiseBackward(
        Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements> kernel,
        View dx, View dy, View x)
    {
        var (count, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        var (xs, xd) = SameShapeOperand(x, dx, nameof(x));
        if (count == 0) return;
        kernel(count, dx.Cols, dxs, dxd, dys, dyd, xs, xd);
    }

    public void ApplyRopeBackward(View dx, View dy, View pe, int headDim)
    {
        var (count, dxs, dxd) = Output(dx);
        var (dys, dyd) = SameShapeOperand(dy, dx, nameof(dy));
        if (headDim <= 0 || headDim % 2 != 0 || dy.Cols % headDim != 0)
            throw new ArgumentException($"ApplyRopeBackward: {dy.Cols} columns do not split into heads of even width {headDim}", nameof(headDim));
        if (pe.Cols != headDim * 2)
            throw new ArgumentException($"ApplyRopeBackward: {pe} must have {headDim / 2}·4 columns", nameof(pe));
        if (pe.Rows != dy.Rows || (pe.Batch != dy.Batch && pe.Batch != 1))
            throw new ArgumentException($"ApplyRopeBackward: {pe} needs one row per token of {dy}", nameof(pe));
        var peTensor = ActivationTensor(pe, nameof(pe));
        CheckBounds(pe, peTensor, nameof(pe));
        if (count == 0) return;
        var peLayout = new StridedMatrix(pe.Offset, dy.Rows, pe.Batch == dy.Batch ? pe.BatchStride : 0, pe.RowStride);
        TrainingOps.ApplyRopeBackward((int)CheckedCount(dx.ElementCount / 2), dx.Cols / 2, headDim / 2,
            dxs, dxd, dys, dyd, peLayout, ElementsOf(peTensor));
    }

    // ---------------------------------------------------------------- attention

    /// <summary>
    /// Per batch and chunk of query rows, all heads at once, as the forward's cuBLAS path does, with the softmax
    /// recomputed: S = scale·Q_h·K_hᵀ, P = softmax(S) in place, dP = dO_h·V_hᵀ, dS = P⊙(dP − rowsum(P⊙dP))·scale in
    /// place, dV_h (+)= Pᵀ·dO_h, dK_h (+)= dSᵀ·Q_h, dQ_h = dS·K_h. The first chunk assigns dK and dV, later chunks add.
    /// Head h of a [rows, heads·D] view is the column block h·D with the view's row stride, so one strided-batched
    /// product covers all heads (batch stride D). The two score buffers (heads × chunk rows × key rows each) are
    /// sized to <see cref="AttentionScratchBudgetBytes"/> together, so memory is bounded whatever the length.
    /// Products run on cuBLAS (sgemm; TF32 under <see cref="GpuPrecision.BFloat16"/>) or the ILGPU GEMM kernel; where
    /// <see cref="AttentionKernel"/> picks flash, <see cref="FlashAttentionBackward"/> runs instead.
    /// </summary>
    public void AttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        ViewRules.AttentionBackwardShapes(dq, dk, dv, dOut, q, k, v, heads);
        var qTensor = ActivationTensor(q, nameof(q));
        var kTensor = ActivationTensor(k, nameof(k));
        var vTensor = ActivationTensor(v, nameof(v));
        var dOutTensor = ActivationTensor(dOut, nameof(dOut));
        var dqTensor = ActivationTensor(dq, nameof(dq));
        var dkTensor = ActivationTensor(dk, nameof(dk));
        var dvTensor = ActivationTensor(dv, nameof(dv));
        CheckBounds(q, qTensor, nameof(q));
        CheckBounds(k, kTensor, nameof(k));
        CheckBounds(v, vTensor, nameof(v));
        CheckBounds(dOut, dOutTensor, nameof(dOut));
        CheckBounds(dq, dqTensor, nameof(dq));
        CheckBounds(dk, dkTensor, nameof(dk));
        CheckBounds(dv, dvTensor, nameof(dv));
        ViewRules.RequireAttentionGradientsApart(dq, dk, dv, dOut, q, k, v);

        int batches = q.Batch, queryRows = q.Rows, keyRows = k.Rows;
        int qkDim = q.Cols / heads, valueDim = v.Cols / heads;
        if (batches == 0 || keyRows == 0) return;
        if (queryRows == 0)
        {
            // No query looked at the keys: their gradients are zero.
            ScaleOrClear(dk, 0f);
            ScaleOrClear(dv, 0f);
            return;
        }

        if (qkDim == valueDim && UsesFlashAttention(qkDim))
        {
            FlashAttentionBackward(dq, dk, dv, dOut, q, k, v, heads, qkDim, scale);
            LastAttentionBackwardPath = "flash";
            return;
        }

        int chunk = GpuMemoryPolicy.AttentionBackwardChunkRows(AttentionScratchBudgetBytes, heads, keyRows, queryRows);
        long scoreFloats = (long)heads * chunk * keyRows;
        var probabilities = floatPool.Rent(scoreFloats);
        var gradients = floatPool.Rent(scoreFloats);
        int group = GroupSizeFor(keyRows, Math.Min(launch.RowGroup, AttentionKernels.SoftmaxMaxGroup));
        int chunks = 0;
        bool onCuBlas = cublas is not null && TrainingGemmOnCuBlasEnabled;
        // Later chunks add into dk and dv: bf16 ones would be rounded after every chunk, so their sums build up in a
        // float32 [keyRows, cols] scratch per batch and are rounded once, as the float32 views' sums are.
        bool chunked = queryRows > chunk;
        using var keySums = chunked && dkTensor.DType != DType.F32 ? (GpuTensor)Allocate([keyRows, dk.Cols]) : null;
        using var valueSums = chunked && dvTensor.DType != DType.F32 ? (GpuTensor)Allocate([keyRows, dv.Cols]) : null;
        try
        {
            for (int b = 0; b < batches; b++)
            {
                var keys = Operand(kTensor, k.Offset + b * k.BatchStride, qkDim, k.RowStride);
                var values = Operand(vTensor, v.Offset + b * v.BatchStride, valueDim, v.RowStride);
                var keyGradients = keySums is null
                    ? Operand(dkTensor, dk.Offset + b * dk.BatchStride, qkDim, dk.RowStride)
                    : Operand(keySums, 0, qkDim, dk.Cols);
                var valueGradients = valueSums is null
                    ? Operand(dvTensor, dv.Offset + b * dv.BatchStride, valueDim, dv.RowStride)
                    : Operand(valueSums, 0, valueDim, dv.Cols);
                for (int firstRow = 0; firstRow < queryRows; firstRow += chunk)
                {
                    int n = Math.Min(chunk, queryRows - firstRow);
                    long scoreStride = (long)n * keyRows;
                    var queries = Operand(qTensor, q.Offset + b * q.BatchStride + firstRow * q.RowStride, qkDim, q.RowStride);
                    var outputGradients = Operand(dOutTensor, dOut.Offset + b * dOut.BatchStride + firstRow * dOut.RowStride, valueDim, dOut.RowStride);
                    var queryGradients = Operand(dqTensor, dq.Offset + b * dq.BatchStride + firstRow * dq.RowStride, qkDim, dq.RowStride);
                    var p = Operand(probabilities, 0, scoreStride, keyRows);
                    var dS = Operand(gradients, 0, scoreStride, keyRows);
                    float beta = firstRow == 0 ? 0f : 1f;

                    ProductOrClear(heads, n, keyRows, qkDim, scale, queries, false, keys, true, 0f, p);
                    var scoreRows = probabilities.View.SubView(0, heads * scoreStride).AsContiguous();
                    kernels.SoftmaxRows(new KernelConfig(heads * n, group), keyRows, scoreRows, scoreRows);
                    ProductOrClear(heads, n, keyRows, valueDim, 1f, outputGradients, false, values, true, 0f, dS);
                    TrainingOps.SoftmaxBackwardRows(new KernelConfig(heads * n, group), keyRows, scale,
                        probabilities.View.SubView(0, heads * scoreStride).AsContiguous(), gradients.View.SubView(0, heads * scoreStride).AsContiguous());
                    ProductOrClear(heads, keyRows, valueDim, n, 1f, p, true, outputGradients, false, beta, valueGradients);
                    ProductOrClear(heads, keyRows, qkDim, n, 1f, dS, true, queries, false, beta, keyGradients);
                    ProductOrClear(heads, n, qkDim, keyRows, 1f, dS, false, keys, false, 0f, queryGradients);
                    chunks++;
                }
                if (keySums is not null) Copy(Batch(dk, b), View.Of(keySums).Reshape(1, keyRows, dk.Cols));
                if (valueSums is not null) Copy(Batch(dv, b), View.Of(valueSums).Reshape(1, keyRows, dv.Cols));
            }
        }
        finally
        {
            // Safe to reuse at once: later work on the same stream runs after these products.
            floatPool.Return(probabilities);
            floatPool.Return(gradients);
        }
        LastAttentionBackwardPath = $"{(onCuBlas ? "cublas" : "ilgpu")}×{chunks}";
    }

    /// <summary><see cref="Product"/> over heads, or nothing where a product is empty (a head width of 0).</summary>
    private void ProductOrClear(int heads, int m, int n, int k, float alpha, DeviceOperand a, bool transposeA,
        DeviceOperand b, bool transposeB, float beta, DeviceOperand c)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            // An empty sum (a head width of 0): c = beta·c.
            if (beta == 0f)
                TrainingOps.Fill((int)CheckedCount((long)heads * m * n), n, 0f,
                    new StridedMatrix(c.Offset, m, c.BatchStride, c.RowStride), c.Data);
            return;
        }
        Product(heads, 1, m, n, k, alpha, a, transposeA, b, transposeB, beta, c);
    }

    // ---------------------------------------------------------------- optimizer and reductions

    public void AdamWStep(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, int step,
        float lr, float beta1, float beta2, float eps, float weightDecay)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        GpuTensor p = FloatOnly(param, nameof(param)), g = FloatOnly(grad, nameof(grad)), mean = FloatOnly(m, nameof(m)), second = FloatOnly(v, nameof(v));
        if (g.Length != p.Length || mean.Length != p.Length || second.Length != p.Length)
            throw new ArgumentException($"AdamW needs equal lengths: param {p}, grad {g}, m {mean}, v {second}");
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "steps count from 1");
        if (ReferenceEquals(p, g) || ReferenceEquals(p, mean) || ReferenceEquals(p, second) || ReferenceEquals(g, mean)
            || ReferenceEquals(g, second) || ReferenceEquals(mean, second))
            throw new ArgumentException("param, grad, m and v must be four different tensors");
        if (p.Length == 0) return;
        var s = AdamWScalars.For(step, lr, beta1, beta2, eps, weightDecay);
        var factors = new AdamWFactors(s.Decay, s.LerpWeight, s.Beta2, s.OneMinusBeta2, s.SqrtBiasCorrection2, s.Eps, s.NegativeStepSize);
        TrainingOps.AdamW((int)CheckedCount(p.Length), factors, p.Floats, g.Floats, mean.Floats, second.Floats);
    }

    private GpuTensor FloatOnly(DeviceTensor tensor, string name)
    {
        var gpu = OwnTensor(tensor, name);
        if (gpu.DType != DType.F32)
            throw new ArgumentException($"{name} ({gpu}) is {gpu.DType}; the optimizer works on float32 tensors", name);
        return gpu;
    }

    public double SumOfSquares(params View[] views)
    {
        int group = launch == LaunchShape.Gpu ? BackwardKernels.MaxGroupSize : launch.RowGroup;
        int maxGroups = launch == LaunchShape.Gpu ? 1024 : 8;
        // The grid depends on each view's size alone, and the partials are added in order on the host: the same
        // gradients give the same norm on every run. Every view's partials share one buffer and one copy back, so a
        // step's norm costs one round trip to the host, not one (with an allocation and a free) per gradient.
        var groups = views.Select(x => x.ElementCount == 0 ? 0 : (int)Math.Clamp((x.ElementCount + 8L * group - 1) / (8L * group), 1, maxGroups)).ToArray();
        int total = groups.Sum();
        if (total == 0) return 0;
        using var partials = accelerator.Allocate1D<double>(total);
        var all = partials.View.AsContiguous();
        for (int i = 0, offset = 0; i < views.Length; offset += groups[i], i++)
        {
            if (groups[i] == 0) continue;
            var (_, layout, data) = Output(views[i]);
            TrainingOps.SumOfSquaresPartials(new KernelConfig(groups[i], group), views[i].ElementCount, views[i].Cols, layout, data, all.SubView(offset, groups[i]));
        }
        var host = new double[total];
        all.CopyToCPU(new Span<double>(host));
        double sum = 0;
        for (int i = 0, offset = 0; i < views.Length; offset += groups[i], i++)
        {
            double ofView = 0;
            for (int g = offset; g < offset + groups[i]; g++) ofView += host[g];
            sum += ofView;
        }
        return sum;
    }

    public void Scale(View x, float factor)
    {
        var (count, layout, data) = Output(x);
        ViewRules.RequireDistinctOutputElements(x, nameof(x));
        if (count == 0) return;
        TrainingOps.ScaleInPlace(count, x.Cols, factor, layout, data);
    }

    public void Zero(View x)
    {
        var (count, layout, data) = Output(x);
        if (count == 0) return;
        // A dense view is one memset (cuMemsetD8Async on CUDA), the bandwidth-bound way to clear gradient buffers.
        if (x.IsContiguous && data.IsBFloat16 != 0)
            data.Words.SubView(x.Offset, count).MemSetToZero();
        else if (x.IsContiguous)
            data.Floats.SubView(x.Offset, count).MemSetToZero();
        else
            TrainingOps.Fill(count, x.Cols, 0f, layout, data);
    }
}
