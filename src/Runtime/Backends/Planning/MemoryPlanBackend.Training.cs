using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Planning;

/// <summary>
/// The training ops of the plan: the ILGPU backend's checks (float32 or bf16 views, <see cref="ViewRules"/>) and its
/// scratch: dequantized or widened weights and the operands cuBLAS converts, column-sum partials, attention's score or
/// flash workspaces and its float32 dk and dv sums.
/// </summary>
public sealed partial class MemoryPlanBackend : ITrainingBackend
{
    public void Gemm(View c, View a, bool transposeA, View b, bool transposeB, float alpha, float beta)
    {
        var (_, _, k, _, sumOverBatches) = ViewRules.GemmSizes(c, a, transposeA, b, transposeB);
        if (b.Tensor is PlannedTensor { IsQuantized: true } quantized)
        {
            QuantizedWeights.RequireWholeProductOperand(quantized, b, transposeA, sumOverBatches);
            using var decoded = RentDequantized(quantized.Shape, Device.CuBlas && Device.Precision == GpuPrecision.BFloat16 ? DType.BF16 : DType.F32);
            Gemm(c, a, transposeA, View.Of(decoded), transposeB, alpha, beta);
            return;
        }
        Activation(c, nameof(c));
        var aTensor = Own(a.Tensor, nameof(a));
        CheckBounds(a, aTensor, nameof(a));
        var bTensor = Own(b.Tensor, nameof(b));
        CheckBounds(b, bTensor, nameof(b));
        ViewRules.RequireDistinctOutputElements(c, nameof(c));
        ViewRules.RequireDisjoint(c, a, nameof(a));
        ViewRules.RequireDisjoint(c, b, nameof(b));
        if (c.ElementCount == 0 || alpha == 0f || k == 0) return;
        using var aWide = WidenedWeight(aTensor);
        using var bWide = WidenedWeight(bTensor);
        // cuBLAS multiplies in one storage (IlgpuBackend.Training's MultipliesInBFloat16 and InStorage): an operand in the
        // other one is copied densely, converted.
        bool bf16 = c.Tensor.DType == DType.BF16 || Device.Precision == GpuPrecision.BFloat16 && (aTensor.DType != DType.F32 || bTensor.DType != DType.F32);
        using var aConverted = Device.CuBlas && (aTensor.DType == DType.F32) == bf16 ? Scratch(ConvertedLength(a), bf16 ? DType.BF16 : DType.F32) : null;
        using var bConverted = Device.CuBlas && (bTensor.DType == DType.F32) == bf16 ? Scratch(ConvertedLength(b), bf16 ? DType.BF16 : DType.F32) : null;
    }

    /// <summary>An f16 weight, which the products read widened whole to float32 (float32 and bf16 tensors are read as stored).</summary>
    private PlannedTensor? WidenedWeight(PlannedTensor tensor) =>
        tensor.DType is DType.F32 or DType.BF16 ? null : Scratch(tensor.Length, DType.F32);

    /// <summary>The dense copy of a product operand: one matrix where its batches share one (batch stride 0).</summary>
    private static long ConvertedLength(View view) =>
        Math.Max(view.Batch == 1 || view.BatchStride == 0 ? (long)view.Rows * view.Cols : view.ElementCount, 1);

    public void SumRows(View y, View x, float beta)
    {
        if (y.Rows != 1 || y.Cols != x.Cols || (y.Batch != x.Batch && y.Batch != 1))
            throw new ArgumentException($"SumRows: {y} must be [{x.Batch} or 1, 1, {x.Cols}] to hold the row sums of {x}", nameof(y));
        Output(y);
        Activation(x, nameof(x));
        ViewRules.RequireDistinctOutputElements(y, nameof(y));
        ViewRules.RequireDisjoint(y, x, nameof(x));
        if (y.ElementCount == 0) return;
        ColumnSumPartials(y.Batch, x.Cols, checked(x.Batch / y.Batch * x.Rows), sums: 1);
    }

    /// <summary>The pooled partials of a column sum (rented and given back within the op).</summary>
    private void ColumnSumPartials(int outputs, int cols, int rowsPerOutput, int sums)
    {
        var shape = GpuMemoryPolicy.ColumnChunks(Device.ColumnSumThreads, outputs, cols, rowsPerOutput);
        Scratch(Math.Max(sums * shape.PartialsPerSum, 1), DType.F32).Dispose();
    }

    public void LayerNormBackward(View dx, View dy, View x, float eps)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        SameShape(x, dx, nameof(x));
    }

    public void RmsNormBackward(View dx, View dy, View x, DeviceTensor scale, int groupSize, float eps)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        SameShape(x, dx, nameof(x));
        if (groupSize <= 0 || dx.Cols % groupSize != 0)
            throw new ArgumentException($"RmsNormBackward: {dx.Cols} columns do not split into groups of {groupSize}", nameof(groupSize));
        var s = Own(scale, nameof(scale)).AsFloat32();
        if (s.Length != groupSize) throw new ArgumentException($"RmsNormBackward: scale {s} does not have {groupSize} elements", nameof(scale));
    }

    public void ModulateBackward(View dx, View dShift, View dScale, View dy, View x, View scale)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        SameShape(x, dx, nameof(x));
        SameShape(scale, dx, nameof(scale));
        PerSampleVector(dShift, x, nameof(dShift), dx, dy, scale);
        PerSampleVector(dScale, x, nameof(dScale), dx, dy, scale, dShift);
        if (x.Batch == 0 || x.Cols == 0) return;
        ColumnSumPartials(x.Batch, x.Cols, x.Rows, sums: 2);
    }

    public void GatedResidualBackward(View dx, View dGate, View dy, View x, View gate)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        SameShape(x, dx, nameof(x));
        SameShape(gate, dx, nameof(gate));
        PerSampleVector(dGate, x, nameof(dGate), dx, dy, gate);
        if (x.Batch == 0 || x.Cols == 0) return;
        ColumnSumPartials(x.Batch, x.Cols, x.Rows, sums: 1);
    }

    private void PerSampleVector(View vector, View x, string name, params View[] others)
    {
        ViewRules.RequirePerSampleVector(vector, x, name, others);
        Activation(vector, name);
    }

    public void SiluBackward(View dx, View dy, View x) => ElementwiseBackward(dx, dy, x);

    public void GeluTanhBackward(View dx, View dy, View x) => ElementwiseBackward(dx, dy, x);

    private void ElementwiseBackward(View dx, View dy, View x)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        SameShape(x, dx, nameof(x));
    }

    public void ApplyRopeBackward(View dx, View dy, View pe, int headDim)
    {
        Output(dx);
        SameShape(dy, dx, nameof(dy));
        if (headDim <= 0 || headDim % 2 != 0 || dy.Cols % headDim != 0)
            throw new ArgumentException($"ApplyRopeBackward: {dy.Cols} columns do not split into heads of even width {headDim}", nameof(headDim));
        if (pe.Cols != headDim * 2) throw new ArgumentException($"ApplyRopeBackward: {pe} must have {headDim / 2}·4 columns", nameof(pe));
        if (pe.Rows != dy.Rows || (pe.Batch != dy.Batch && pe.Batch != 1))
            throw new ArgumentException($"ApplyRopeBackward: {pe} needs one row per token of {dy}", nameof(pe));
        Activation(pe, nameof(pe));
    }

    public void AttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale)
    {
        ViewRules.AttentionBackwardShapes(dq, dk, dv, dOut, q, k, v, heads);
        foreach (var (view, name) in new[] { (q, nameof(q)), (k, nameof(k)), (v, nameof(v)), (dOut, nameof(dOut)), (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) })
            Activation(view, name);
        ViewRules.RequireAttentionGradientsApart(dq, dk, dv, dOut, q, k, v);
        int qkDim = q.Cols / heads, valueDim = v.Cols / heads;
        if (q.Batch == 0 || k.Rows == 0 || q.Rows == 0) return;
        if (qkDim == valueDim && Device.UsesFlashAttention(qkDim))
        {
            // The flash backward's workspace: recomputed output and query gradient, log-sum-exp and row dots.
            var (outputFloats, statisticFloats) = GpuMemoryPolicy.FlashBackwardWorkspace(q.Batch, q.Rows, heads * qkDim, heads);
            using var output = Scratch(outputFloats, DType.F32);
            using var queryGradient = Scratch(outputFloats, DType.F32);
            using var logSumExp = Scratch(statisticFloats, DType.F32);
            using var rowDots = Scratch(statisticFloats, DType.F32);
            return;
        }
        // Probabilities and their gradients for one chunk of query rows.
        int chunk = GpuMemoryPolicy.AttentionBackwardChunkRows(Device.AttentionScratchBudgetBytes, heads, k.Rows, q.Rows);
        long scores = (long)heads * chunk * k.Rows;
        using var probabilities = Scratch(scores, DType.F32);
        using var gradients = Scratch(scores, DType.F32);
        // bf16 dk and dv add up over chunks in float32.
        using var keySums = chunk < q.Rows && dk.Tensor.DType != DType.F32 ? Scratch((long)k.Rows * dk.Cols, DType.F32) : null;
        using var valueSums = chunk < q.Rows && dv.Tensor.DType != DType.F32 ? Scratch((long)k.Rows * dv.Cols, DType.F32) : null;
        // On cuBLAS a bf16 pass rounds the float32 scores for their products with bf16 operands, one at a time.
        if (Device.CuBlas && q.Tensor.DType == DType.BF16) Scratch(scores, DType.BF16).Dispose();
    }

    public void AdamWStep(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, int step,
        float lr, float beta1, float beta2, float eps, float weightDecay)
    {
        var tensors = new[] { (param, nameof(param)), (grad, nameof(grad)), (m, nameof(m)), (v, nameof(v)) }
            .Select(t => Own(t.Item1, t.Item2) is { DType: DType.F32 } own ? own
                : throw new ArgumentException($"{t.Item2} ({t.Item1}) is {t.Item1.DType}; the optimizer works on float32 tensors", t.Item2)).ToArray();
        if (tensors.Any(t => t.Length != param.Length))
            throw new ArgumentException($"AdamW needs equal lengths: param {param}, grad {grad}, m {m}, v {v}");
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "steps count from 1");
        if (tensors.Distinct().Count() != 4) throw new ArgumentException("param, grad, m and v must be four different tensors");
    }

    /// <summary>Checks the views; the sum is 0, as nothing is computed (its partials are not pooled on the GPU).</summary>
    public double SumOfSquares(params View[] views)
    {
        foreach (var view in views) Activation(view, nameof(views));
        return 0;
    }

    public void Scale(View x, float factor)
    {
        Output(x);
        ViewRules.RequireDistinctOutputElements(x, nameof(x));
    }

    public void Zero(View x) => Output(x);

    /// <summary>As the ILGPU backend: the pooled buffer goes back to its pool while the contents are in host memory.</summary>
    public void MoveToHost(DeviceTensor tensor)
    {
        var moved = Movable(tensor);
        if (moved.OnHost) return;
        moved.Pool!.Return(moved.Bucket);
        moved.OnHost = true;
    }

    public void MoveToDevice(DeviceTensor tensor)
    {
        var moved = Movable(tensor);
        if (!moved.OnHost) return;
        moved.Bucket = moved.Pool!.Rent(moved.Length);
        moved.OnHost = false;
        TrackTotal();
    }

    private PlannedTensor Movable(DeviceTensor tensor)
    {
        if (tensor is not PlannedTensor planned || !ReferenceEquals(planned.Owner, this))
            throw new ArgumentException($"{tensor} was not allocated by this backend", nameof(tensor));
        if (planned.Pool is null)
            throw new ArgumentException($"{tensor} is a weight; only activations move to host memory", nameof(tensor));
        return planned;
    }
}
