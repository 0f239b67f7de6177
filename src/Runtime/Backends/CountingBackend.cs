using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// Passes every op to another backend and counts the floating-point work of the heavy ones (GEMMs,
/// convolutions and attention), so benchmarks report achieved GFLOP/s for any model without a hand-written FLOP formula.
/// With profiling on, it also waits for each op and adds its time to a per-op total (slower, but it shows
/// where a forward pass spends its time).
/// </summary>
public sealed partial class CountingBackend : IBackend
{
    private readonly IBackend _inner;
    private readonly Dictionary<string, (double Seconds, int Calls)> _profile = new();
    private readonly Dictionary<string, double> _operations = new();

    public CountingBackend(IBackend inner, bool profile = false)
    {
        _inner = inner;
        Profiling = profile;
    }

    public bool Profiling { get; }

    /// <summary>The backend every op is passed to (a model reaches an ILGPU backend's fused kernels through it).</summary>
    public IBackend Inner => _inner;

    /// <summary>Work that bypasses the ops (a model's fused kernels), timed under <paramref name="op"/> when profiling.</summary>
    public void Time(string op, Action run) => Timed(op, run);

    /// <summary>Seconds and calls per op since the last reset (empty unless profiling).</summary>
    public IReadOnlyDictionary<string, (double Seconds, int Calls)> Profile => _profile;

    private void Timed(string op, Action run)
    {
        if (!Profiling)
        {
            run();
            return;
        }
        _inner.Synchronize();
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        run();
        _inner.Synchronize();
        double seconds = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        _profile.TryGetValue(op, out var total);
        _profile[op] = (total.Seconds + seconds, total.Calls + 1);
    }

    /// <summary>Multiply-adds counted as two operations.</summary>
    public double FloatingPointOperations { get; private set; }

    /// <summary>
    /// <see cref="FloatingPointOperations"/> per op since the last reset, counted whether or not profiling, so a
    /// profile's time per op gives each op's achieved rate.
    /// </summary>
    public IReadOnlyDictionary<string, double> OperationsByOp => _operations;

    private void Count(string op, double operations)
    {
        FloatingPointOperations += operations;
        _operations[op] = _operations.GetValueOrDefault(op) + operations;
    }

    public void ResetCount()
    {
        FloatingPointOperations = 0;
        _profile.Clear();
        _operations.Clear();
    }

    public string Name => _inner.Name;
    public string Description => _inner.Description;

    public DeviceTensor Allocate(int[] shape) => _inner.Allocate(shape);
    public long ReleaseCachedMemory() => _inner.ReleaseCachedMemory();
    public DeviceTensor AllocateActivation(int[] shape) => _inner.AllocateActivation(shape);
    public DeviceTensor Upload(HostTensor host) => _inner.Upload(host);
    public DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw) => _inner.UploadWeight(shape, dtype, raw);
    public DeviceTensor UploadQuantizedWeight(int[] shape, Quantization.QuantizedBlocks weight) => _inner.UploadQuantizedWeight(shape, weight);
    public bool HoldsQuantizedWeights => _inner.HoldsQuantizedWeights;
    public HostTensor Download(View view, int[] shape) => _inner.Download(view, shape);
    public void Synchronize() => _inner.Synchronize();

    public void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias)
    {
        Count(nameof(Linear), 2.0 * x.Batch * x.Rows * x.Cols * y.Cols);
        Timed(nameof(Linear), () => _inner.Linear(y, x, weight, bias));
    }

    public void Attention(View o, View q, View k, View v, int heads, float scale)
    {
        // q·kᵀ and p·v: two products of Lq × Lk × head_dim per head.
        Count(nameof(Attention), 4.0 * q.Batch * q.Rows * k.Rows * q.Cols);
        Timed(nameof(Attention), () => _inner.Attention(o, q, k, v, heads, scale));
    }

    public void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding)
    {
        // Per output pixel and channel, Cin·kh·kw multiply-adds (weight is [Cout, Cin, kh, kw]).
        if (weight.Shape.Length == 4)
            Count(nameof(Conv2d), 2.0 * y.Batch * y.Rows * weight.Length);
        Timed(nameof(Conv2d), () => _inner.Conv2d(y, x, height, width, weight, bias, stride, padding));
    }

    public void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps) => Timed(nameof(GroupNorm), () => _inner.GroupNorm(y, x, groups, scale, bias, eps));
    public void UpsampleNearest2x(View y, View x, int height, int width) => Timed(nameof(UpsampleNearest2x), () => _inner.UpsampleNearest2x(y, x, height, width));
    public void LayerNorm(View y, View x, float eps) => Timed(nameof(LayerNorm), () => _inner.LayerNorm(y, x, eps));
    public void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps) => Timed(nameof(RmsNorm), () => _inner.RmsNorm(y, x, scale, groupSize, eps));
    public void Modulate(View y, View x, View shift, View scale) => Timed(nameof(Modulate), () => _inner.Modulate(y, x, shift, scale));
    public void GatedResidual(View y, View residual, View x, View gate) => Timed(nameof(GatedResidual), () => _inner.GatedResidual(y, residual, x, gate));
    public void Add(View y, View a, View b) => Timed(nameof(Add), () => _inner.Add(y, a, b));
    public void Silu(View y, View x) => Timed(nameof(Silu), () => _inner.Silu(y, x));
    public void GeluTanh(View y, View x) => Timed(nameof(GeluTanh), () => _inner.GeluTanh(y, x));
    public void Copy(View y, View x) => Timed(nameof(Copy), () => _inner.Copy(y, x));
    public void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod) => Timed(nameof(TimestepEmbedding), () => _inner.TimestepEmbedding(y, t, timeFactor, maxPeriod));
    public void RopeEmbed(View pe, View ids, int[] axesDim, float theta) => Timed(nameof(RopeEmbed), () => _inner.RopeEmbed(pe, ids, axesDim, theta));
    public void ScaleShift(View y, View x, float scale, float shift) => Timed(nameof(ScaleShift), () => _inner.ScaleShift(y, x, scale, shift));
    public void Transpose(View y, View x) => Timed(nameof(Transpose), () => _inner.Transpose(y, x));
    public void ApplyRope(View y, View x, View pe, int headDim) => Timed(nameof(ApplyRope), () => _inner.ApplyRope(y, x, pe, headDim));

    public void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal)
    {
        // Counted like unmasked attention: the kernels compute every score and drop the masked ones.
        Count(nameof(MaskedAttention), 4.0 * q.Batch * q.Rows * k.Rows * q.Cols);
        Timed(nameof(MaskedAttention), () => _inner.MaskedAttention(o, q, k, v, heads, scale, bias, causal));
    }

    public void Embedding(View y, View ids, DeviceTensor table) => Timed(nameof(Embedding), () => _inner.Embedding(y, ids, table));
    public void AddPositionEmbedding(View y, View x, DeviceTensor table) => Timed(nameof(AddPositionEmbedding), () => _inner.AddPositionEmbedding(y, x, table));
    public void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps) => Timed(nameof(AffineLayerNorm), () => _inner.AffineLayerNorm(y, x, scale, bias, eps));
    public void QuickGelu(View y, View x) => Timed(nameof(QuickGelu), () => _inner.QuickGelu(y, x));
    public void Multiply(View y, View a, View b) => Timed(nameof(Multiply), () => _inner.Multiply(y, a, b));
    public void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional) =>
        Timed(nameof(RelativePositionBias), () => _inner.RelativePositionBias(bias, table, buckets, maxDistance, bidirectional));
    public void GatherArgmaxRows(View y, View x, View ids) => Timed(nameof(GatherArgmaxRows), () => _inner.GatherArgmaxRows(y, x, ids));

    public void Dispose() => _inner.Dispose();
}
