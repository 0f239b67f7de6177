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
    private readonly int largestGroup;
    private readonly ConcurrentDictionary<MethodInfo, Action<KernelConfig, FusedLaunch>> loaded = new();
    private readonly FusedKernelLauncher? timedLauncher;
    private readonly Action<string, Action>? time;

    internal FusedKernelLauncher(IlgpuBackend backend, int largestGroup)
    {
        this.backend = backend;
        this.largestGroup = largestGroup;
    }

    /// <summary>The launcher of a profiling backend: each launch of <paramref name="inner"/>, timed per kernel.</summary>
    private FusedKernelLauncher(FusedKernelLauncher inner, Action<string, Action> time)
    {
        backend = inner.backend;
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
        {
            var (layout, data) = backend.BroadcastOperand(operands[i], shape, $"operand {i} of {kernel.Method.Name}");
            bound[i] = new FusedOperand(layout, data);
        }
        long groups = (long)shape.Batch * shape.Rows * (shape.Cols / segment);
        if (groups == 0) return;
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
    private Action<Index1D, ColumnChunks, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, int, ArrayView<float>>? columnSumPartials;
    private Action<Index1D, ColumnChunks, int, float, StridedMatrix, ArrayView<float>, ArrayView<float>>? finishColumnSums;

    /// <summary>
    /// The per-sample sums a fused backward group leaves to a separate launch: y[0, b, c] = Σ_r dy[b, r, c]·factor[b, r, c]
    /// (factor null: Σ_r dy) + beta·y, y [1, dy.Batch, dy.Cols] (beta 0 does not read y). Deterministic: partials per
    /// chunk of rows, added in row order, then the chunks in order (in float64), the scheme of the unfused backward ops.
    /// </summary>
    public void SumRows(View y, View dy, View? factor, float beta)
    {
        if (timedLauncher is not null)
        {
            time!(nameof(SumRows), () => timedLauncher.SumRows(y, dy, factor, beta));
            return;
        }
        if (y.Batch != 1 || y.Rows != dy.Batch || y.Cols != dy.Cols)
            throw new ArgumentException($"SumRows: {y} must be [1, {dy.Batch}, {dy.Cols}], one row per sample of {dy}", nameof(y));
        var (dyLayout, dyData) = backend.BroadcastOperand(dy, dy, "dy of SumRows");
        var (factorLayout, factorData) = factor is { } f ? backend.BroadcastOperand(f, dy, "factor of SumRows") : (dyLayout, dyData);
        var (yLayout, yData) = backend.BroadcastOperand(y, y, "y of SumRows");
        if (y.ElementCount == 0) return;
        long columns = (long)dy.Batch * dy.Cols;
        int rows = Math.Max(dy.Rows, 1);
        int wanted = (int)Math.Clamp((ColumnSumThreads + columns - 1) / columns, 1, rows);
        int rowsPerChunk = (rows + wanted - 1) / wanted;
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        long partialCount = columns * chunks;
        if (partialCount > int.MaxValue) throw new NotSupportedException($"{partialCount} partial sums exceed one launch's int range");
        var shape = new ColumnChunks(dy.Cols, chunks, rowsPerChunk, dy.Rows, partialCount);
        lock (scratchGate)
        {
            if (scratch == null || scratch.Length < partialCount)
            {
                scratch?.Dispose();
                scratch = backend.Accelerator.Allocate1D<float>(partialCount);
            }
            columnSumPartials ??= backend.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, int, ArrayView<float>>(FusedReductionKernels.ColumnSumPartials);
            finishColumnSums ??= backend.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, int, float, StridedMatrix, ArrayView<float>, ArrayView<float>>(BackwardKernels.FinishColumnSums);
            var partials = scratch.View.SubView(0, partialCount);
            columnSumPartials((int)partialCount, shape, dyLayout, dyData, factorLayout, factorData, factor is null ? 0 : 1, partials);
            finishColumnSums((int)columns, shape, 0, beta, yLayout, yData, partials);
        }
        Interlocked.Add(ref launches, 2);
    }
}
