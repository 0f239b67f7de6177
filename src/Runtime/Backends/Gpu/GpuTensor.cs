using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// A tensor in an ILGPU accelerator's memory: float32 (activations, float32 weights) or 16-bit words (bf16/f16
/// weights, kept narrow so the 23.8 GB bf16 model fits an 80 GB GPU). Pooled buffers may be longer than the tensor;
/// only the first <see cref="DeviceTensor.Length"/> elements belong to it. A linear weight may instead be held in its
/// quantized blocks (<see cref="IsQuantized"/>; see IlgpuBackend.Quantized.cs).
/// </summary>
public sealed class GpuTensor : DeviceTensor
{
    private readonly IlgpuBackend owner;
    private MemoryBuffer1D<float, Stride1D.Dense>? floatBuffer;
    private MemoryBuffer1D<ushort, Stride1D.Dense>? wordBuffer;
    private HostBuffer? onHost;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense>? blockBuffer;
    private readonly bool pooled;
    private readonly OffloadedWeight? offloaded;
    private GpuTensor? widened;
    private bool disposed;

    internal GpuTensor(IlgpuBackend owner, int[] shape, MemoryBuffer1D<float, Stride1D.Dense> buffer, bool pooled)
        : base(shape, DType.F32)
    {
        this.owner = owner;
        floatBuffer = buffer;
        this.pooled = pooled;
    }

    internal GpuTensor(IlgpuBackend owner, int[] shape, DType dtype, MemoryBuffer1D<ushort, Stride1D.Dense> buffer, bool pooled = false)
        : base(shape, dtype)
    {
        if (dtype is not (DType.BF16 or DType.F16))
            throw new ArgumentException($"16-bit storage holds BF16 or F16, not {dtype}", nameof(dtype));
        this.owner = owner;
        wordBuffer = buffer;
        this.pooled = pooled;
    }

    /// <summary>
    /// A linear weight [out, in] held in its quantized blocks, on the device or offloaded (host bytes that reach the
    /// device arena when a product reads them); DType is F32, the values the products compute with.
    /// </summary>
    internal GpuTensor(IlgpuBackend owner, int[] shape, TensorFormat format, float scale,
        MemoryBuffer1D<byte, Stride1D.Dense>? blocks, OffloadedWeight? offloadedBlocks = null)
        : base(shape, DType.F32)
    {
        if ((blocks is null) == (offloadedBlocks is null))
            throw new ArgumentException("a quantized weight's blocks are either on the device or offloaded");
        this.owner = owner;
        blockBuffer = blocks;
        offloaded = offloadedBlocks;
        Format = format;
        Scale = scale;
    }

    /// <summary>How a quantized weight's values are stored (null: plain float32 or 16-bit words).</summary>
    internal TensorFormat? Format { get; }

    /// <summary>The factor a quantized weight's decoded values are multiplied by (1 except for scaled fp8).</summary>
    internal float Scale { get; } = 1f;

    internal bool IsQuantized => Format is not null;

    internal ArrayView<byte> Blocks
    {
        get
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (offloaded is not null)
                return offloaded.Acquire().View.SubView(0, offloaded.Bytes);
            return blockBuffer!.View.AsContiguous();
        }
    }

    public override string ToString() => IsQuantized ? $"{Format}{HostTensor.FormatShape(Shape)}" : base.ToString();

    /// <summary>An offloaded weight: its bytes stay in host memory and reach the device when an op reads them.</summary>
    internal GpuTensor(IlgpuBackend owner, int[] shape, DType dtype, OffloadedWeight weight)
        : base(shape, dtype)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"offloaded weights are F32, BF16 or F16, not {dtype}", nameof(dtype));
        this.owner = owner;
        offloaded = weight;
    }

    internal IlgpuBackend Owner => owner;

    /// <summary>
    /// Device bytes held while the tensor lives: a quantized weight's blocks, none for an offloaded weight (the offload
    /// arena holds it when read).
    /// </summary>
    public override long StoredBytes => offloaded is not null ? 0 : blockBuffer?.Length ?? base.StoredBytes;

    internal ArrayView<float> Floats
    {
        get
        {
            ThrowIfUnreadable();
            if (offloaded is not null && DType == DType.F32 && !IsQuantized)
                return offloaded.Acquire().View.Cast<float>().SubView(0, Length);
            return floatBuffer is not null
                ? floatBuffer.View.SubView(0, Length).AsContiguous()
                : throw new InvalidOperationException($"{this} holds {(IsQuantized ? "quantized blocks" : "16-bit words")}, not float32");
        }
    }

    internal ArrayView<ushort> Words
    {
        get
        {
            ThrowIfUnreadable();
            if (offloaded is not null && DType != DType.F32 && !IsQuantized)
                return offloaded.Acquire().View.Cast<ushort>().SubView(0, Length);
            return wordBuffer is not null
                ? wordBuffer.View.SubView(0, Length).AsContiguous()
                : throw new InvalidOperationException($"{this} holds {(IsQuantized ? "quantized blocks" : "float32")}, not 16-bit words");
        }
    }

    /// <summary>Device address of element <paramref name="index"/>, for cuBLAS.</summary>
    internal IntPtr DevicePointer(long index)
    {
        ThrowIfUnreadable();
        if (IsQuantized)
            throw new InvalidOperationException($"{this} holds quantized blocks: the products dequantize it into a scratch buffer first");
        if (offloaded is not null)
            return offloaded.Acquire().Pointer + checked((nint)(index * DType.SizeInBytes()));
        return floatBuffer is not null
            ? floatBuffer.NativePtr + checked((nint)(index * sizeof(float)))
            : wordBuffer!.NativePtr + checked((nint)(index * sizeof(ushort)));
    }

    /// <summary>
    /// This tensor as float32: itself, or a widened copy made once and kept while this tensor lives (for the rare
    /// 16-bit bias or norm scale; large 16-bit weights go through the GEMM paths instead).
    /// </summary>
    internal GpuTensor AsFloat32()
    {
        ThrowIfUnreadable();
        if (floatBuffer is not null || offloaded is not null && DType == DType.F32)
            return this;
        return widened ??= owner.Widen(this);
    }

    private void ThrowIfUnreadable()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (onHost is not null)
            throw new InvalidOperationException(ReadOnHost(this));
    }

    internal static string ReadOnHost(DeviceTensor tensor) =>
        $"{tensor} is read while in host memory: MoveToHost moved it and MoveToDevice has not brought it back";

    /// <summary>
    /// Copies a pooled activation into host bytes of the backend's and gives its device buffer back to the pool. The copy
    /// is queued on the one stream every op runs on, so the buffer's next user runs after it and nothing waits here.
    /// </summary>
    internal void MoveToHost()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (onHost is not null)
            return;
        if (!pooled || widened is not null)
            throw new ArgumentException($"{this} is not an activation: only pooled activations move to host memory");
        var host = owner.RentHostBuffer(Length * DType.SizeInBytes());
        host.CopyFrom(DeviceBytes(), owner.Accelerator.DefaultStream);
        if (floatBuffer is not null)
            owner.ReturnToPool(floatBuffer);
        else
            owner.ReturnToPool(wordBuffer!);
        (floatBuffer, wordBuffer, onHost) = (null, null, host);
    }

    /// <summary>Rents a device buffer again and queues the copy back; the host bytes return to the backend's keeping.</summary>
    internal void MoveToDevice()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (onHost is not { } host)
            return;
        if (DType == DType.F32)
            floatBuffer = owner.RentFloats(Length);
        else
            wordBuffer = owner.RentWords(Length);
        onHost = null;
        host.CopyTo(DeviceBytes(), owner.Accelerator.DefaultStream);
        owner.ReturnHostBuffer(host);
    }

    private ArrayView1D<byte, Stride1D.Dense> DeviceBytes() => floatBuffer is not null
        ? floatBuffer.View.SubView(0, Length).AsContiguous().Cast<byte>()
        : wordBuffer!.View.SubView(0, Length).AsContiguous().Cast<byte>();

    public override void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        if (onHost is not null)
            owner.ReturnHostBuffer(onHost);
        widened?.Dispose();
        if (floatBuffer is not null)
        {
            if (pooled)
                owner.ReturnToPool(floatBuffer);
            else
                floatBuffer.Dispose();
        }
        if (wordBuffer is not null)
        {
            if (pooled)
                owner.ReturnToPool(wordBuffer);
            else
                wordBuffer.Dispose();
        }
        blockBuffer?.Dispose();
        offloaded?.Release();
    }
}
