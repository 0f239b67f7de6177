using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Planning;

/// <summary>
/// A backend that runs a model's graph on shapes alone and counts the GPU memory <see cref="IlgpuBackend"/> would hold:
/// tensors have a shape, a dtype and a byte size but no elements, every op checks its views as the ILGPU backend does
/// and computes nothing, and every allocation (activations, weights, the scratch each op rents, the offload arena)
/// follows the ILGPU backend's policies (<see cref="GpuMemoryPolicy"/>, its pool buckets and parking) for the
/// <see cref="PlannedDevice"/> given. So the 12B model's peak at 1024² is known in seconds on a machine with no GPU and
/// no weights. <see cref="IMemoryStatistics"/> counts what the ILGPU backend's counts (pools and the offload arena);
/// weights are counted apart (<see cref="WeightBytes"/>), and <see cref="PeakTotalBytes"/> is the peak of both.
/// Downloads return zeros.
/// </summary>
public sealed partial class MemoryPlanBackend : IBackend, IMemoryStatistics
{
    private readonly PlannedPool floatPool = new(sizeof(float));
    private readonly PlannedPool wordPool = new(sizeof(ushort));

    public MemoryPlanBackend(PlannedDevice device)
    {
        Device = device;
        if (device.OffloadBudgetBytes is <= 0)
            throw new ArgumentException($"--gpu-memory-budget must be positive, not {device.OffloadBudgetBytes} bytes");
        FusedKernels = new FusedKernelLauncher(this);
        TrackTotal();
    }

    public PlannedDevice Device { get; }

    public string Name => "plan";

    public string Description => $"memory plan of the CUDA backend ({(Device.CuBlas ? "cuBLAS" : "ILGPU kernels")}, precision {Device.Precision}" +
        (Device.OffloadBudgetBytes is long budget ? $", weights offloaded through {WeightResidency.Format(budget)}" : "") + "): shapes only, nothing computed";

    /// <summary>The fused kernels' launcher in planning mode: it checks their operands and launches nothing.</summary>
    public FusedKernelLauncher FusedKernels { get; }

    // ---------------------------------------------------------------- counts

    private long OffloadArenaBytes => Device.OffloadBudgetBytes ?? 0;

    public long AllocatedBytes => floatPool.AllocatedBytes + wordPool.AllocatedBytes + OffloadArenaBytes;

    /// <summary>As the ILGPU backend's: the sum of each pool's high-water mark, plus the arena.</summary>
    public long PeakAllocatedBytes => floatPool.PeakBytes + wordPool.PeakBytes + OffloadArenaBytes;

    /// <summary>As the ILGPU backend's: parked buffers are freed, then the marks restart from what tensors hold.</summary>
    public void ResetPeak()
    {
        floatPool.Trim();
        wordPool.Trim();
        floatPool.ResetPeak();
        wordPool.ResetPeak();
        RestartTotals();
    }

    /// <summary>
    /// Restarts the high-water marks from what is held now, parked buffers included (what the next phase of a pipeline
    /// finds on the device: the ILGPU backend's pools keep an earlier phase's buffers until trimmed).
    /// </summary>
    public void StartPhase()
    {
        floatPool.ResetPeak();
        wordPool.ResetPeak();
        RestartTotals();
    }

    /// <summary>Device bytes of the weights alive now (exact allocations outside the pools).</summary>
    public long WeightBytes { get; private set; }

    /// <summary>The most weights plus pools plus arena have held at once since creation or <see cref="ResetPeak"/>.</summary>
    public long PeakTotalBytes { get; private set; }

    /// <summary>
    /// The most weights, arena and buffers in use (parked ones left out) have taken at once: what the device must have,
    /// since a pool that runs out of memory frees its parked buffers and tries again.
    /// </summary>
    public long PeakNeededBytes { get; private set; }

    /// <summary>Frees parked buffers, as <see cref="IlgpuBackend.ReleaseCachedMemory"/> (between a pipeline's phases).</summary>
    public long ReleaseCachedMemory() => floatPool.Trim() + wordPool.Trim();

    private void TrackTotal()
    {
        PeakTotalBytes = Math.Max(PeakTotalBytes, WeightBytes + AllocatedBytes);
        PeakNeededBytes = Math.Max(PeakNeededBytes, WeightBytes + floatPool.InUseBytes + wordPool.InUseBytes + OffloadArenaBytes);
    }

    private void RestartTotals()
    {
        PeakTotalBytes = WeightBytes + AllocatedBytes;
        PeakNeededBytes = WeightBytes + floatPool.InUseBytes + wordPool.InUseBytes + OffloadArenaBytes;
    }

    internal PlannedTensor Rent(int[] shape, DType dtype)
    {
        var pool = dtype == DType.BF16 ? wordPool : floatPool;
        long bucket = pool.Rent(HostTensor.ElementCount(shape));
        TrackTotal();
        return new PlannedTensor(this, (int[])shape.Clone(), dtype, pool, bucket, 0);
    }

    /// <summary>The scratch a product dequantizes a quantized weight into, sized as IlgpuBackend.Dequantize sizes it.</summary>
    internal PlannedTensor RentDequantized(int[] shape, DType dtype)
    {
        var pool = dtype == DType.BF16 ? wordPool : floatPool;
        long bucket = pool.Rent(GpuMemoryPolicy.DequantizeScratchLength(HostTensor.ElementCount(shape), largestQuantizedLength));
        TrackTotal();
        return new PlannedTensor(this, (int[])shape.Clone(), dtype, pool, bucket, 0);
    }

    /// <summary>Elements of the largest quantized weight placed: the size of every dequantization scratch.</summary>
    private long largestQuantizedLength;

    /// <summary>A scratch buffer rented for one op and given back when disposed.</summary>
    private PlannedTensor Scratch(long length, DType dtype) => Rent([checked((int)Math.Min(length, int.MaxValue))], dtype) is var t && length <= int.MaxValue
        ? t
        : throw new NotSupportedException($"{length} elements exceed one launch's int range; split the op");

    internal void Release(PlannedTensor tensor)
    {
        if (tensor.Pool is { } pool)
            pool.Return(tensor.Bucket);
        else
            WeightBytes -= tensor.StoredBytes;
    }

    private PlannedTensor Weight(int[] shape, DType dtype, long bytes, TensorFormat? format = null, bool offloaded = false)
    {
        var tensor = new PlannedTensor(this, (int[])shape.Clone(), dtype, null, 0, offloaded ? 0 : bytes, format, offloaded);
        WeightBytes += tensor.StoredBytes;
        TrackTotal();
        return tensor;
    }

    // ---------------------------------------------------------------- memory

    public DeviceTensor Allocate(int[] shape) => Rent(shape, DType.F32);

    public DeviceTensor AllocateActivation(int[] shape) => Rent(shape, Device.Precision == GpuPrecision.BFloat16 ? DType.BF16 : DType.F32);

    public DeviceTensor Upload(HostTensor host) => Allocate(host.Shape);

    public DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw)
    {
        long length = HostTensor.ElementCount(shape);
        if (raw.Length != length * dtype.SizeInBytes())
            throw new ArgumentException(
                $"a {dtype} tensor of shape {HostTensor.FormatShape(shape)} needs {length * dtype.SizeInBytes()} bytes, got {raw.Length}");
        return PlaceWeight(shape, dtype);
    }

    /// <summary><see cref="UploadWeight"/> without the bytes: what a checkpoint tensor of this dtype would take.</summary>
    public DeviceTensor PlaceWeight(int[] shape, DType dtype)
    {
        DType stored = GpuMemoryPolicy.WeightStorage(shape, dtype);
        long length = HostTensor.ElementCount(shape);
        bool offloaded = GpuMemoryPolicy.Offloads(Device.OffloadBudgetBytes is not null, shape);
        if (offloaded) RequireFitsArena(length * stored.SizeInBytes(), $"a {stored}{HostTensor.FormatShape(shape)} weight");
        return Weight(shape, stored, length * stored.SizeInBytes(), offloaded: offloaded);
    }

    public DeviceTensor UploadQuantizedWeight(int[] shape, QuantizedBlocks weight)
    {
        QuantizedWeights.RequireLinearShape(shape, weight);
        return PlaceQuantizedWeight(shape, weight.Format);
    }

    /// <summary><see cref="UploadQuantizedWeight"/> without the blocks: a [out, in] weight held in <paramref name="format"/>.</summary>
    public DeviceTensor PlaceQuantizedWeight(int[] shape, TensorFormat format)
    {
        if (format.AsDType() is not null)
            return PlaceWeight(shape, DType.F32);
        long bytes = format.ByteCount(shape) ?? throw new ArgumentException(
            $"a {format} weight needs rows of whole {format.BlockElements()}-value blocks; {HostTensor.FormatShape(shape)} has rows of {shape[^1]}");
        largestQuantizedLength = Math.Max(largestQuantizedLength, HostTensor.ElementCount(shape));
        bool offloaded = GpuMemoryPolicy.Offloads(Device.OffloadBudgetBytes is not null, shape);
        if (offloaded) RequireFitsArena(bytes, $"a {format}{HostTensor.FormatShape(shape)} weight");
        return Weight(shape, DType.F32, Math.Max(bytes, 1), format, offloaded);
    }

    public bool HoldsQuantizedWeights => true;

    /// <summary>
    /// Every parameter of <paramref name="model"/> placed as loading a checkpoint would hold it: a checkpoint storing each
    /// tensor as <paramref name="stored"/> says (null, or a tensor it leaves out: the schema's dtype), as stored (quantized
    /// ones decoded to float32, as WeightLoader does without a precision), or with <paramref name="precision"/>
    /// (--base-precision) in the format it picks for each tensor (the schema's "unquantized" layers and vectors stay float;
    /// quantized matrices keep their blocks unless decoded at load).
    /// </summary>
    public IReadOnlyDictionary<string, DeviceTensor> PlaceWeights(ModelDescriptor model, BasePrecision? precision = null,
        IReadOnlyDictionary<string, TensorFormat>? stored = null)
    {
        var weights = new Dictionary<string, DeviceTensor>();
        foreach (var parameter in model.Parameters)
        {
            TensorFormat storedFormat = stored?.GetValueOrDefault(parameter.Name) ?? parameter.DType.ToFormat();
            TensorFormat held = precision?.FormatFor(storedFormat, parameter) ?? (storedFormat.AsDType() is null ? TensorFormat.F32 : storedFormat);
            weights[parameter.Name] = held.AsDType() is DType dtype
                ? PlaceWeight(parameter.Shape, dtype)
                : parameter.Shape.Length == 2 && !precision!.DecodeAtLoad
                    ? PlaceQuantizedWeight(parameter.Shape, held)
                    : PlaceWeight(parameter.Shape, DType.F32);
        }
        return weights;
    }

    private void RequireFitsArena(long bytes, string what)
    {
        long budget = Device.OffloadBudgetBytes!.Value;
        if (bytes > budget)
            throw new ArgumentException(
                $"{what} takes {WeightResidency.Format(bytes)} on the device, more than the whole weight offload budget of {WeightResidency.Format(budget)}: " +
                $"raise --gpu-memory-budget above {WeightResidency.Format(bytes)} (or run without --offload)");
    }

    public HostTensor Download(View view, int[] shape)
    {
        long count = HostTensor.ElementCount(shape);
        if (count != view.ElementCount)
            throw new ArgumentException($"{view} has {view.ElementCount} elements, shape {HostTensor.FormatShape(shape)} {count}");
        var tensor = Activation(view, nameof(view));
        // The ILGPU backend copies a strided or bf16 view into a dense float32 tensor first.
        if (count > 0 && !(view.IsContiguous && tensor.DType == DType.F32))
            Allocate([view.Batch, view.Rows, view.Cols]).Dispose();
        return new HostTensor((int[])shape.Clone(), new float[count]);
    }

    public void Synchronize() { }

    public void Dispose() { }

    // ---------------------------------------------------------------- view checks (the ILGPU backend's)

    private PlannedTensor Own(DeviceTensor tensor, string name)
    {
        if (tensor is not PlannedTensor planned || !ReferenceEquals(planned.Owner, this))
            throw new ArgumentException($"{name} ({tensor}) was not allocated by this backend", name);
        if (planned.IsQuantized)
            throw new ArgumentException(QuantizedWeights.OnlyLinearReads(planned), name);
        if (planned.OnHost)
            throw new InvalidOperationException(GpuTensor.ReadOnHost(planned));
        return planned;
    }

    /// <summary>The tensor under an activation view (float32 or bf16), the view within its bounds.</summary>
    private PlannedTensor Activation(View view, string name)
    {
        var tensor = Own(view.Tensor, name);
        if (tensor.DType is not (DType.F32 or DType.BF16))
            throw new ArgumentException($"{name} views a {tensor.DType} tensor; activation views are float32 or bf16", name);
        CheckBounds(view, tensor, name);
        return tensor;
    }

    private static void CheckBounds(View view, DeviceTensor tensor, string name)
    {
        if (view.ElementCount == 0) return;
        if (view.Offset < 0 || view.BatchStride < 0 || view.RowStride < 0)
            throw new ArgumentException($"{name} {view} has a negative offset or stride", name);
        long last = view.Offset + (view.Batch - 1) * view.BatchStride + (view.Rows - 1) * view.RowStride + view.Cols - 1;
        if (last >= tensor.Length)
            throw new ArgumentException($"{name} {view} reaches element {last} of a tensor of {tensor.Length}", name);
    }

    /// <summary>An output view; false when it is empty (the op has nothing to do).</summary>
    private bool Output(View y)
    {
        Activation(y, nameof(y));
        if (y.ElementCount > int.MaxValue)
            throw new NotSupportedException($"{y.ElementCount} elements exceed one launch's int range; split the op");
        return y.ElementCount > 0;
    }

    private void Operand(View operand, View output, string name)
    {
        if (operand.Cols != output.Cols)
            throw new ArgumentException($"{name} {operand} does not match or broadcast to {output}", name);
        RowOperand(operand, output, name);
    }

    private void RowOperand(View operand, View output, string name)
    {
        Activation(operand, name);
        if ((operand.Rows != output.Rows && operand.Rows != 1) || (operand.Batch != output.Batch && operand.Batch != 1))
            throw new ArgumentException($"{name} {operand} does not match or broadcast to {output}", name);
    }

    /// <summary>A fused kernel's operand: the output's rows and batches or one of each (see FusedKernelLauncher).</summary>
    internal void BroadcastOperand(View operand, View output, string name) => RowOperand(operand, output, name);

    private void SameShape(View operand, View output, string name)
    {
        if (operand.Batch != output.Batch || operand.Rows != output.Rows || operand.Cols != output.Cols)
            throw new ArgumentException($"{name} {operand} must have the shape of {output}", name);
        Activation(operand, name);
    }

    private void Elementwise(View y, params (View View, string Name)[] operands)
    {
        if (!Output(y)) return;
        foreach (var (view, name) in operands) Operand(view, y, name);
    }

    // ---------------------------------------------------------------- linear

    public void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias)
    {
        if (weight is PlannedTensor { IsQuantized: true } quantized)
        {
            if (!ReferenceEquals(quantized.Owner, this))
                throw new ArgumentException($"weight ({weight}) was not allocated by this backend", nameof(weight));
            if (quantized.Shape[1] != x.Cols || quantized.Shape[0] != y.Cols)
                throw new ArgumentException($"weight {quantized} is not [{y.Cols}, {x.Cols}] for x {x} → y {y}", nameof(weight));
            // The whole weight dequantized into pooled scratch for the product: bf16 words for GemmEx, else float32.
            using var decoded = RentDequantized(quantized.Shape, Device.CuBlas && Device.Precision == GpuPrecision.BFloat16 ? DType.BF16 : DType.F32);
            Linear(y, x, decoded, bias);
            return;
        }
        var w = Own(weight, nameof(weight));
        int n = y.Cols, kDim = x.Cols;
        if (w.Length != (long)n * kDim || w.Shape.Length < 2 || w.Shape[^1] != kDim)
            throw new ArgumentException($"weight {w} is not [{n}, {kDim}] for x {x} → y {y}", nameof(weight));
        if (y.Batch != x.Batch || y.Rows != x.Rows)
            throw new ArgumentException($"y {y} and x {x} need the same batch and rows");
        var b = bias is null ? null : Own(bias, nameof(bias)).AsFloat32();
        if (b is not null && b.Length != n)
            throw new ArgumentException($"bias {b} does not have {n} elements", nameof(bias));
        if (!Output(y)) return;
        Activation(x, nameof(x));
        if (kDim == 0)
        {
            Allocate([n]).Dispose();
            return;
        }
        if (Device.CuBlas)
            LinearOnCuBlas(y, x, w);
    }

    /// <summary>The scratch of IlgpuBackend.LinearOnCuBlas: a dense operand copy, a float32 output, a widened weight.</summary>
    private void LinearOnCuBlas(View y, View x, PlannedTensor w)
    {
        if (!(x.BatchesStackAsRows && y.BatchesStackAsRows) && x.Batch > 1)
        {
            for (int batch = 0; batch < x.Batch; batch++)
                LinearOnCuBlas(Batch(y, batch), Batch(x, batch), w);
            return;
        }
        int m = checked(x.Batch * x.Rows), n = y.Cols;
        if (y.RowStride < n || y.RowStride > int.MaxValue)
            throw new ArgumentException($"Linear output rows overlap or are too far apart for cuBLAS: {y}", nameof(y));
        if (w.DType == DType.BF16 && Device.Precision == GpuPrecision.BFloat16)
        {
            ProductOperand(x, DType.BF16)?.Dispose();
            return;
        }
        using var wideY = y.Tensor.DType == DType.F32 ? null : Rent([m, n], DType.F32);
        using var wideWeights = w.DType == DType.F32 ? null : Rent(w.Shape, DType.F32);
        ProductOperand(x, DType.F32)?.Dispose();
    }

    /// <summary>x as a cuBLAS operand of <paramref name="storage"/>: itself, or a dense pooled copy.</summary>
    private PlannedTensor? ProductOperand(View x, DType storage)
    {
        if (x.Tensor.DType == storage && x.RowStride >= x.Cols && x.RowStride <= int.MaxValue)
            return null;
        return Rent([checked(x.Batch * x.Rows), x.Cols], storage);
    }

    private static View Batch(View view, int batch) =>
        view with { Offset = view.Offset + batch * view.BatchStride, Batch = 1, BatchStride = (long)view.Rows * view.RowStride };

    // ---------------------------------------------------------------- element-wise and row ops

    public void LayerNorm(View y, View x, float eps)
    {
        if (Output(y)) SameShape(x, y, nameof(x));
    }

    public void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps)
    {
        bool work = Output(y);
        if (groupSize <= 0 || y.Cols % groupSize != 0)
            throw new ArgumentException($"RmsNorm group size {groupSize} does not divide {y.Cols} columns", nameof(groupSize));
        var s = Own(scale, nameof(scale)).AsFloat32();
        if (s.Length != groupSize)
            throw new ArgumentException($"RmsNorm scale has {s.Length} elements, group size is {groupSize}", nameof(scale));
        if (work) SameShape(x, y, nameof(x));
    }

    public void Modulate(View y, View x, View shift, View scale) => Elementwise(y, (x, nameof(x)), (shift, nameof(shift)), (scale, nameof(scale)));

    public void GatedResidual(View y, View residual, View x, View gate) =>
        Elementwise(y, (residual, nameof(residual)), (x, nameof(x)), (gate, nameof(gate)));

    public void Add(View y, View a, View b) => Elementwise(y, (a, nameof(a)), (b, nameof(b)));

    public void Silu(View y, View x) => Elementwise(y, (x, nameof(x)));

    public void GeluTanh(View y, View x) => Elementwise(y, (x, nameof(x)));

    public void Copy(View y, View x) => Elementwise(y, (x, nameof(x)));

    public void ScaleShift(View y, View x, float scale, float shift) => Elementwise(y, (x, nameof(x)));

    public void QuickGelu(View y, View x) => Elementwise(y, (x, nameof(x)));

    public void Multiply(View y, View a, View b) => Elementwise(y, (a, nameof(a)), (b, nameof(b)));

    public void Transpose(View y, View x)
    {
        if (y.Batch != x.Batch || y.Rows != x.Cols || y.Cols != x.Rows)
            throw new ArgumentException($"cannot transpose {x} into {y}: each sample needs [rows, cols] → [cols, rows]");
        if (Output(y)) Activation(x, nameof(x));
    }

    public void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod)
    {
        if (y.Cols % 2 != 0) throw new ArgumentException($"a timestep embedding has an even width, got {y.Cols}", nameof(y));
        if (t.Cols != 1) throw new ArgumentException($"timesteps are one per row (Cols = 1), got {t.Cols} columns", nameof(t));
        if (Output(y)) RowOperand(t, y, nameof(t));
    }

    public void RopeEmbed(View pe, View ids, int[] axesDim, float theta)
    {
        if (ids.Cols != axesDim.Length) throw new ArgumentException($"ids have {ids.Cols} columns for {axesDim.Length} axes", nameof(ids));
        if (axesDim.Any(d => d <= 0 || d % 2 != 0))
            throw new ArgumentException($"RoPE axis widths must be positive and even, got [{string.Join(", ", axesDim)}]", nameof(axesDim));
        if (pe.Cols != 2 * axesDim.Sum()) throw new ArgumentException($"pe needs {2 * axesDim.Sum()} columns, has {pe.Cols}", nameof(pe));
        if (ids.Batch != pe.Batch || ids.Rows != pe.Rows) throw new ArgumentException($"ids {ids} and pe {pe} disagree on batch or rows");
        if (Output(pe)) Activation(ids, nameof(ids));
    }

    public void ApplyRope(View y, View x, View pe, int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0 || x.Cols % headDim != 0)
            throw new ArgumentException($"head dim {headDim} must be even and divide {x.Cols} columns", nameof(headDim));
        if (pe.Cols != headDim / 2 * 4) throw new ArgumentException($"pe needs {headDim / 2 * 4} columns for head dim {headDim}, has {pe.Cols}", nameof(pe));
        if (!Output(y)) return;
        SameShape(x, y, nameof(x));
        if (pe.Rows != y.Rows || (pe.Batch != y.Batch && pe.Batch != 1)) throw new ArgumentException($"pe {pe} needs one row per token of {y}", nameof(pe));
        Activation(pe, nameof(pe));
    }

    // ---------------------------------------------------------------- attention

    public void Attention(View o, View q, View k, View v, int heads, float scale) => AttentionCore(o, q, k, v, heads, null);

    public void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal)
    {
        if (bias is View b && (b.Batch != heads || b.Rows != q.Rows || b.Cols != k.Rows))
            throw new ArgumentException($"bias {b} must be [{heads} heads, {q.Rows} queries, {k.Rows} keys]", nameof(bias));
        AttentionCore(o, q, k, v, heads, bias);
    }

    private void AttentionCore(View o, View q, View k, View v, int heads, View? bias)
    {
        if (heads <= 0 || q.Cols % heads != 0) throw new ArgumentException($"{heads} heads do not divide {q.Cols} columns", nameof(heads));
        int headDim = q.Cols / heads;
        if (k.Cols != q.Cols || v.Cols != q.Cols || o.Cols != q.Cols)
            throw new ArgumentException($"q, k, v and o need the same columns: {q.Cols}, {k.Cols}, {v.Cols}, {o.Cols}");
        if (o.Batch != q.Batch || o.Rows != q.Rows) throw new ArgumentException($"o {o} needs q's batch and rows {q}", nameof(o));
        if (k.Batch != q.Batch || v.Batch != q.Batch || k.Rows != v.Rows) throw new ArgumentException($"k {k} and v {v} need q's batch and equal rows");
        if (k.Rows == 0) throw new ArgumentException("attention over zero keys is undefined", nameof(k));
        if (!Output(o)) return;
        Activation(q, nameof(q));
        Activation(k, nameof(k));
        Activation(v, nameof(v));
        if (bias is View b) Activation(b, "bias");
        if (Device.UsesFlashAttention(headDim)) return;
        if (Device.CuBlas && Device.Attention != AttentionKernelChoice.Tiled && new[] { o, q, k, v }.All(CuBlasCanAddress)
            && k.Tensor.DType == q.Tensor.DType && v.Tensor.DType == q.Tensor.DType && o.Tensor.DType == q.Tensor.DType)
        {
            // The score scratch of one chunk of query rows, and bf16 probabilities for the second product on bf16 views.
            bool bf16 = q.Tensor.DType == DType.BF16;
            int chunk = GpuMemoryPolicy.AttentionChunkRows(Device.AttentionScratchBudgetBytes, heads, k.Rows, q.Rows, bf16);
            using var scores = Scratch((long)heads * chunk * k.Rows, DType.F32);
            using var probabilities = bf16 ? Scratch((long)heads * chunk * k.Rows, DType.BF16) : null;
            return;
        }
        if (headDim > AttentionKernels.MaxHeadDim)
            throw new ArgumentException($"head dim {headDim} exceeds the attention kernel's {AttentionKernels.MaxHeadDim}; wider heads run through cuBLAS", nameof(heads));
    }

    private static bool CuBlasCanAddress(View view) => view.RowStride >= view.Cols && view.RowStride <= int.MaxValue;

    // ---------------------------------------------------------------- image ops

    public void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding)
    {
        var w = Own(weight, nameof(weight));
        var b = bias is null ? null : Own(bias, nameof(bias));
        var shape = ConvShape.Validate(y, x, height, width, w.Shape, b?.Length, stride, padding);
        bool work = Output(y);
        Activation(x, nameof(x));
        if (!work) return;
        ConvShape.RequireDisjoint(y, x, nameof(x));
        int k = shape.PatchLength, cout = shape.OutChannels;
        // The weight repacked [Cout, k] (bf16 on a bf16 forward), then im2col chunks through Linear.
        bool narrow = x.Tensor.DType == DType.BF16 && w.DType == DType.BF16;
        using var packed = Rent([cout, k], narrow ? DType.BF16 : DType.F32);
        if (shape.IsPointwise)
        {
            Linear(y, x, packed, b);
            return;
        }
        int outPixels = shape.OutPixels;
        var (imagesPerChunk, pixelsPerChunk, scratchElements) = GpuMemoryPolicy.ConvChunks(Device.ConvScratchFloats, k, outPixels, shape.Batch);
        using var columns = Scratch(scratchElements, narrow ? DType.BF16 : DType.F32);
        for (int b0 = 0; b0 < shape.Batch; b0 += imagesPerChunk)
        {
            int images = Math.Min(imagesPerChunk, shape.Batch - b0);
            for (int p0 = 0; p0 < outPixels; p0 += pixelsPerChunk)
            {
                int pixels = Math.Min(pixelsPerChunk, outPixels - p0);
                var patches = new View(columns, 0, images, pixels, k, (long)pixels * k, k);
                var outputs = new View(y.Tensor, y.Offset + b0 * y.BatchStride + p0 * y.RowStride, images, pixels, cout, y.BatchStride, y.RowStride);
                Linear(outputs, patches, packed, b);
            }
        }
    }

    public void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps)
    {
        bool work = Output(y);
        SameShape(x, y, nameof(x));
        int channels = y.Cols;
        if (groups <= 0 || channels % groups != 0) throw new ArgumentException($"{channels} channels do not split into {groups} groups", nameof(groups));
        var s = scale is null ? null : Own(scale, nameof(scale)).AsFloat32();
        var b = bias is null ? null : Own(bias, nameof(bias)).AsFloat32();
        if (s is not null && s.Length != channels) throw new ArgumentException($"scale {s} does not have {channels} elements", nameof(scale));
        if (b is not null && b.Length != channels) throw new ArgumentException($"bias {b} does not have {channels} elements", nameof(bias));
        ConvShape.RequireUnitColumnRows(x, nameof(x));
        ConvShape.RequireUnitColumnRows(y, nameof(y));
        if (!work) return;
        int pairs = checked(y.Batch * groups);
        var (_, chunks) = GpuMemoryPolicy.GroupNormChunks(Device.Multiprocessors, pairs, y.Rows, channels / groups, Device.GroupNormElementsPerBlock);
        using var partials = Scratch(4L * pairs * chunks, DType.F32);
        using var stats = Scratch(4L * pairs, DType.F32);
    }

    public void UpsampleNearest2x(View y, View x, int height, int width)
    {
        ConvShape.ValidateUpsample2x(y, x, height, width);
        bool work = Output(y);
        Activation(x, nameof(x));
        if (work) ConvShape.RequireDisjoint(y, x, nameof(x));
    }

    // ---------------------------------------------------------------- text-encoder ops

    public void Embedding(View y, View ids, DeviceTensor table)
    {
        var t = Own(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[1] != y.Cols) throw new ArgumentException($"table {t} must be [vocab, {y.Cols}] for {y}", nameof(table));
        if (ids.Cols != 1 || ids.Batch != y.Batch || ids.Rows != y.Rows) throw new ArgumentException($"ids {ids} must have one column per row of {y}", nameof(ids));
        Output(y);
        Activation(ids, nameof(ids));
    }

    public void AddPositionEmbedding(View y, View x, DeviceTensor table)
    {
        var t = Own(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[0] < y.Rows || t.Shape[1] != y.Cols)
            throw new ArgumentException($"table {t} must be [positions ≥ {y.Rows}, {y.Cols}] for {y}", nameof(table));
        if (!Output(y)) return;
        SameShape(x, y, nameof(x));
        t.AsFloat32();
    }

    public void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps)
    {
        var s = Own(scale, nameof(scale)).AsFloat32();
        var b = bias is null ? null : Own(bias, nameof(bias)).AsFloat32();
        if (s.Length != y.Cols || b is not null && b.Length != y.Cols)
            throw new ArgumentException($"scale {s} and bias {b} need {y.Cols} elements", nameof(scale));
        if (Output(y)) SameShape(x, y, nameof(x));
    }

    public void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional)
    {
        var t = Own(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[0] != buckets || t.Shape[1] != bias.Batch)
            throw new ArgumentException($"table {t} must be [{buckets}, {bias.Batch}] for {bias}", nameof(table));
        if (!Output(bias)) return;
        t.AsFloat32();
    }

    public void GatherArgmaxRows(View y, View x, View ids)
    {
        if (y.Rows != 1 || y.Batch != x.Batch || y.Cols != x.Cols || ids.Batch != x.Batch || ids.Rows != 1 || ids.Cols != x.Rows)
            throw new ArgumentException($"GatherArgmaxRows: y {y}, x {x} and ids {ids} need [B, 1, C], [B, L, C] and [B, 1, L]");
        if (!Output(y)) return;
        Activation(x, nameof(x));
        Activation(ids, nameof(ids));
    }
}
