using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// A float32 tensor in a pinned managed array: pinned so kernels can hold raw pointers across a whole op without
/// fixed blocks, managed so the GC (not us) owns the memory once the tensor is gone.
/// </summary>
public sealed unsafe class CpuTensor : DeviceTensor
{
    private readonly CpuBufferPool? _pool;
    private float[]? _data;

    internal CpuTensor(int[] shape, float[] pinnedData, CpuBufferPool? pool) : base(shape, DType.F32)
    {
        if (pinnedData.LongLength != Length)
            throw new ArgumentException($"buffer of {pinnedData.LongLength} floats for a tensor of {Length}");
        _data = pinnedData;
        _pool = pool;
        Pointer = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinnedData));
    }

    /// <summary>Element 0; valid until the tensor is disposed.</summary>
    public float* Pointer { get; }

    public bool IsDisposed => _data is null;

    /// <summary>An activation buffer from <see cref="CpuBackend.Allocate"/> (writable), not an uploaded weight (read-only).</summary>
    internal bool IsPooled => _pool is not null;

    public Span<float> Span => (_data ?? throw new ObjectDisposedException(ToString())).AsSpan();

    public override void Dispose()
    {
        float[]? data = Interlocked.Exchange(ref _data, null);
        if (data is not null) _pool?.Return(data);
    }
}

/// <summary>
/// Recycles pinned activation buffers by exact length: a model allocates the same few shapes every step, and
/// pinned arrays on the pinned object heap are costly to allocate and never compacted.
/// </summary>
internal sealed class CpuBufferPool
{
    private readonly Dictionary<long, Stack<float[]>> _free = new();
    private readonly object _gate = new();

    private long _rentedBytes, _peakRentedBytes;

    /// <summary>Bytes rented and not returned: the live activation tensors.</summary>
    public long RentedBytes => Interlocked.Read(ref _rentedBytes);

    /// <summary>The high-water mark of <see cref="RentedBytes"/>.</summary>
    public long PeakRentedBytes => Interlocked.Read(ref _peakRentedBytes);

    public void ResetPeak()
    {
        lock (_gate) _peakRentedBytes = _rentedBytes;
    }

    public float[] Rent(long length)
    {
        if (length > Array.MaxLength)
            throw new InsufficientMemoryException(
                $"a tensor of {length:N0} values ({length * sizeof(float) / (double)(1L << 30):F1} GiB) is past the largest buffer the CPU backend " +
                $"holds ({Array.MaxLength:N0} values): lower the image size or --resolution");
        lock (_gate)
        {
            _rentedBytes += length * sizeof(float);
            if (_rentedBytes > _peakRentedBytes) _peakRentedBytes = _rentedBytes;
            if (_free.TryGetValue(length, out var stack) && stack.Count > 0) return stack.Pop();
        }
        return GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
    }

    public void Return(float[] buffer)
    {
        lock (_gate)
        {
            _rentedBytes -= buffer.LongLength * sizeof(float);
            if (!_free.TryGetValue(buffer.LongLength, out var stack)) _free[buffer.LongLength] = stack = new Stack<float[]>();
            stack.Push(buffer);
        }
    }

    public void Clear()
    {
        lock (_gate) _free.Clear();
    }
}
