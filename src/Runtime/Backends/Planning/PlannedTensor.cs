using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Planning;

/// <summary>
/// A tensor of a <see cref="MemoryPlanBackend"/>: shape, dtype and the device bytes the CUDA backend would hold for it,
/// no elements. An activation holds a pool bucket; a weight an exact allocation (<see cref="StoredBytes"/>), quantized
/// blocks, or nothing on the device when offloaded.
/// </summary>
public sealed class PlannedTensor : DeviceTensor
{
    private readonly MemoryPlanBackend owner;
    private readonly long storedBytes;
    private PlannedTensor? widened;
    private bool disposed;

    internal PlannedTensor(MemoryPlanBackend owner, int[] shape, DType dtype, PlannedPool? pool, long bucket, long storedBytes,
        TensorFormat? format = null, bool offloaded = false)
        : base(shape, dtype)
    {
        this.owner = owner;
        Pool = pool;
        Bucket = bucket;
        this.storedBytes = storedBytes;
        Format = format;
        Offloaded = offloaded;
    }

    internal MemoryPlanBackend Owner => owner;

    /// <summary>The pool an activation or scratch tensor was rented from; null for a weight.</summary>
    internal PlannedPool? Pool { get; }

    /// <summary>The pool bucket the tensor holds (while on the device).</summary>
    internal long Bucket { get; set; }

    /// <summary>Moved to host memory by MoveToHost: it holds no bucket until MoveToDevice.</summary>
    internal bool OnHost { get; set; }

    /// <summary>The quantized format of a linear weight held in its blocks (DType is then F32, the values the products use).</summary>
    internal TensorFormat? Format { get; }

    internal bool IsQuantized => Format is not null;

    internal bool Offloaded { get; }

    /// <summary>As GpuTensor's: a weight's exact allocation (its blocks when quantized, none when offloaded), else the elements' bytes.</summary>
    public override long StoredBytes => Pool is null ? storedBytes : base.StoredBytes;

    /// <summary>This tensor as float32: itself, or a widened copy from the float pool kept while it lives (as GpuTensor.AsFloat32).</summary>
    internal PlannedTensor AsFloat32()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (DType == DType.F32) return this;
        return widened ??= owner.Rent(Shape, DType.F32);
    }

    public override string ToString() => IsQuantized ? $"{Format}{HostTensor.FormatShape(Shape)}" : base.ToString();

    public override void Dispose()
    {
        if (disposed) return;
        disposed = true;
        widened?.Dispose();
        if (!OnHost) owner.Release(this);
    }
}
