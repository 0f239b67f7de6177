using System.Collections.Concurrent;
using System.Reflection;
using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Launches the kernels a generated model fuses from its schema (chains of element-wise and row-wise ops, emitted as
/// ILGPU C# beside the model) on the ILGPU backend's accelerator. Each kernel is compiled on its first launch. A group
/// of threads handles one segment of one row: the kernel reduces over the segment (LayerNorm's row, RMSNorm's head)
/// and every thread touches only its own columns, so a kernel may write over its inputs.
/// </summary>
public sealed class FusedKernelLauncher
{
    private readonly IlgpuBackend backend;
    private readonly Planning.MemoryPlanBackend? plan;
    private readonly int largestGroup;
    private readonly ConcurrentDictionary<MethodInfo, Action<KernelConfig, FusedLaunch>> loaded = new();
    private readonly FusedKernelLauncher? timedLauncher;
    private readonly Action<string, Action>? time;

    internal FusedKernelLauncher(IlgpuBackend backend, int largestGroup)
    {
        this.backend = backend;
        this.largestGroup = largestGroup;
    }

    /// <summary>
    /// The launcher of a memory plan: a model takes its fused path (with the fused path's buffers, as on the GPU), whose
    /// operands are checked and nothing is launched.
    /// </summary>
    internal FusedKernelLauncher(Planning.MemoryPlanBackend plan)
    {
        this.plan = plan;
        backend = null!;
    }

    /// <summary>The launcher of a profiling backend: each launch of <paramref name="inner"/>, timed per kernel.</summary>
    private FusedKernelLauncher(FusedKernelLauncher inner, Action<string, Action> time)
    {
        backend = inner.backend;
        plan = inner.plan;
        largestGroup = inner.largestGroup;
        timedLauncher = inner;
        this.time = time;
    }

    /// <summary>Fused kernels launched so far: a forward's count shows its fusion ran (or, as 0, that it did not).</summary>
    public long Launches => timedLauncher?.Launches ?? Interlocked.Read(ref launches);

    private long launches;

    /// <summary>The launcher of an ILGPU backend; null for any other backend, whose models run their ops unfused.</summary>
    public static FusedKernelLauncher? For(IBackend backend) => backend switch
    {
        IlgpuBackend gpu => gpu.FusedKernels,
        Planning.MemoryPlanBackend plan => plan.FusedKernels,
        CountingBackend counting when For(counting.Inner) is { } inner => new FusedKernelLauncher(inner, counting.Time),
        _ => null,
    };

    /// <summary>
    /// Runs <paramref name="kernel"/> over <paramref name="shape"/> (the group's output, [.., rows, cols]) in segments of
    /// <paramref name="segment"/> columns, <paramref name="lanes"/> adjacent columns per thread (2 where RoPE rotates
    /// pairs). Operands have the shape's rows or broadcast one row (a per-sample vector, a per-segment weight).
    /// </summary>
    public void Launch(Action<FusedLaunch> kernel, View shape, int segment, int lanes, params View[] operands)
    {
        if (timedLauncher is not null)
        {
            time!(kernel.Method.Name, () => timedLauncher.Launch(kernel, shape, segment, lanes, operands));
            return;
        }
        if (operands.Length > FusedLaunch.MaxOperands)
            throw new ArgumentException($"a fused kernel takes at most {FusedLaunch.MaxOperands} operands, got {operands.Length}", nameof(operands));
        if (segment <= 0 || shape.Cols % segment != 0 || lanes <= 0 || segment % lanes != 0)
            throw new ArgumentException($"segment {segment} (lanes {lanes}) does not tile the {shape.Cols} columns of {shape}", nameof(segment));
        var bound = new FusedOperand[operands.Length];
        for (int i = 0; i < operands.Length; i++)
            bound[i] = Operand(operands[i], shape, $"operand {i} of {kernel.Method.Name}");
        long groups = (long)shape.Batch * shape.Rows * (shape.Cols / segment);
        if (groups == 0 || plan is not null) return;
        if (groups > int.MaxValue)
            throw new NotSupportedException($"{groups} segments exceed one launch's int range");
        var launch = loaded.GetOrAdd(kernel.Method, method => backend.Accelerator.LoadStreamKernel<FusedLaunch>(
            (Action<FusedLaunch>)Delegate.CreateDelegate(typeof(Action<FusedLaunch>), method)));
        int threads = 8;
        while (threads < segment / lanes && threads < largestGroup)
            threads *= 2;
        launch(new KernelConfig((int)groups, threads), new FusedLaunch(segment, shape.Cols / segment, bound));
        Interlocked.Increment(ref launches);
    }

    /// <summary>Threads the partial sums of <see cref="SumRows"/> aim at: enough to fill a GPU, few partials per column.</summary>
    private const long ColumnSumThreads = 1 << 16;

    private readonly object scratchGate = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? scratch;
    private Action<Index1D, FusedColumnSums, ArrayView<float>>? columnSumPartials, finishColumnSums;

    /// <summary>
    /// The per-sample sums a fused backward group leaves to separate launches, up to three over one shape in one pair of
    /// launches: each <see cref="FusedColumnSum"/> sets y[0, b, c] = Σ_r dy[b, r, c]·factor[b, r, c] (no factor: Σ_r dy)
    /// + beta·y, y [1, dy.Batch, dy.Cols] (beta 0 does not read y). Deterministic: partials per chunk of rows, added in
    /// row order, then the chunks in order in float64, the scheme of the unfused backward ops.
    /// </summary>
    public void SumRows(params FusedColumnSum[] sums)
    {
        if (timedLauncher is not null)
        {
            time!("Fused" + nameof(SumRows), () => timedLauncher.SumRows(sums));
            return;
        }
        if (sums.Length is 0 or > FusedColumnSums.MaxSums)
            throw new ArgumentException($"SumRows takes 1 to {FusedColumnSums.MaxSums} sums, got {sums.Length}", nameof(sums));
        var shape = sums[0].Gradient;
        var gradients = new FusedOperand[sums.Length];
        var factors = new FusedOperand?[sums.Length];
        var targets = new FusedOperand[sums.Length];
        for (int i = 0; i < sums.Length; i++)
        {
            var (y, dy, factor) = (sums[i].Target, sums[i].Gradient, sums[i].Factor);
            if (dy.Batch != shape.Batch || dy.Rows != shape.Rows || dy.Cols != shape.Cols)
                throw new ArgumentException($"SumRows: gradient {dy} of sum {i} must have the shape of {shape}", nameof(sums));
            if (y.Batch != 1 || y.Rows != dy.Batch || y.Cols != dy.Cols)
                throw new ArgumentException($"SumRows: {y} must be [1, {dy.Batch}, {dy.Cols}], one row per sample of {dy}", nameof(sums));
            gradients[i] = Operand(dy, dy, $"gradient of sum {i}");
            if (factor is { } f) factors[i] = Operand(f, dy, $"factor of sum {i}");
            targets[i] = Operand(y, y, $"target of sum {i}");
        }
        // The partials' scratch below is the launcher's own, outside the pools: the backend's memory count leaves it out, as does a plan.
        if (shape.Batch == 0 || shape.Cols == 0 || plan is not null) return;
        long columns = (long)shape.Batch * shape.Cols;
        int rows = Math.Max(shape.Rows, 1);
        int wanted = (int)Math.Clamp((ColumnSumThreads + columns - 1) / columns, 1, rows);
        int rowsPerChunk = (rows + wanted - 1) / wanted;
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        long perSum = columns * chunks;
        if (perSum * sums.Length > int.MaxValue) throw new NotSupportedException($"{perSum * sums.Length} partial sums exceed one launch's int range");
        var launch = new FusedColumnSums(new ColumnChunks(shape.Cols, chunks, rowsPerChunk, shape.Rows, perSum),
            gradients, factors, targets, sums.Select(s => s.Beta).ToArray());
        lock (scratchGate)
        {
            if (scratch == null || scratch.Length < perSum * sums.Length)
            {
                scratch?.Dispose();
                scratch = backend.Accelerator.Allocate1D<float>(perSum * sums.Length);
            }
            columnSumPartials ??= backend.Accelerator.LoadAutoGroupedStreamKernel<Index1D, FusedColumnSums, ArrayView<float>>(FusedReductionKernels.ColumnSumPartials);
            finishColumnSums ??= backend.Accelerator.LoadAutoGroupedStreamKernel<Index1D, FusedColumnSums, ArrayView<float>>(FusedReductionKernels.FinishColumnSums);
            var partials = scratch.View.SubView(0, perSum * sums.Length);
            columnSumPartials((int)perSum, launch, partials);
            finishColumnSums((int)(columns * sums.Length), launch, partials);
        }
        Interlocked.Add(ref launches, 2);
    }

    private FusedOperand Operand(View operand, View shape, string name)
    {
        if (plan is not null)
        {
            plan.BroadcastOperand(operand, shape, name);
            return default;
        }
        var (layout, data) = backend.BroadcastOperand(operand, shape, name);
        return new FusedOperand(layout, data);
    }
}

/// <summary>One per-sample sum of <see cref="FusedKernelLauncher.SumRows"/>: Σ over rows of gradient (times factor) into target, plus beta·target.</summary>
public readonly record struct FusedColumnSum(View Target, View Gradient, View? Factor, float Beta);
