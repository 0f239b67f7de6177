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
}
