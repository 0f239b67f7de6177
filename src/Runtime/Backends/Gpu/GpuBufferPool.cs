using ILGPU;
using ILGPU.Runtime;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Reuses device buffers by size bucket so a forward pass, which frees and re-allocates the same activation sizes
/// every block, does not call cudaMalloc/cudaFree per op (both synchronise the device).
/// Buckets are the next size of the form 2^e·(8 + i)/8: at most 12.5 % slack, and few distinct sizes.
/// A buffer returned here may still be read by queued kernels; that is safe because all work runs in order on
/// one stream, so its next user's kernels run after them.
/// </summary>
internal sealed class GpuBufferPool<T> : IDisposable where T : unmanaged
{
    private const long SmallestBucket = 256;
    private readonly Accelerator accelerator;
    private readonly Dictionary<long, Stack<MemoryBuffer1D<T, Stride1D.Dense>>> free = new();
    private readonly object gate = new();
    private bool disposed;

    public GpuBufferPool(Accelerator accelerator) => this.accelerator = accelerator;

    /// <summary>Bytes held by free buffers.</summary>
    public long CachedBytes { get; private set; }

    /// <summary>Bytes of device memory the pool's buffers take, in use or parked.</summary>
    public long AllocatedBytes => Interlocked.Read(ref allocatedBytes);

    /// <summary>The most <see cref="AllocatedBytes"/> has been since creation or <see cref="ResetPeak"/>.</summary>
    public long PeakBytes => Interlocked.Read(ref peakBytes);

    private long allocatedBytes, peakBytes;

    /// <summary>Restarts the high-water mark from what the pool holds now.</summary>
    public void ResetPeak() => Interlocked.Exchange(ref peakBytes, AllocatedBytes);

    private MemoryBuffer1D<T, Stride1D.Dense> AllocateCounted(long bucket)
    {
        var buffer = accelerator.Allocate1D<T>(bucket);
        long now = Interlocked.Add(ref allocatedBytes, buffer.LengthInBytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref peakBytes)) && Interlocked.CompareExchange(ref peakBytes, now, peak) != peak) { }
        return buffer;
    }

    private void Release(MemoryBuffer1D<T, Stride1D.Dense> buffer)
    {
        Interlocked.Add(ref allocatedBytes, -buffer.LengthInBytes);
        buffer.Dispose();
    }

    public static long BucketLength(long length)
    {
        if (length <= SmallestBucket)
            return SmallestBucket;
        long power = 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)length));
        long step = Math.Max(power / 8, 1);
        return (length + step - 1) / step * step;
    }

    public MemoryBuffer1D<T, Stride1D.Dense> Rent(long length)
    {
        long bucket = BucketLength(length);
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (free.TryGetValue(bucket, out var stack) && stack.Count > 0)
            {
                var buffer = stack.Pop();
                CachedBytes -= buffer.LengthInBytes;
                return buffer;
            }
        }
        try
        {
            return AllocateCounted(bucket);
        }
        catch (Exception first) when (first is not ArgumentException)
        {
            // Out of device memory with buffers parked here: free them and try once more.
            if (Trim() == 0)
                throw;
            return AllocateCounted(bucket);
        }
    }

    public void Return(MemoryBuffer1D<T, Stride1D.Dense> buffer)
    {
        lock (gate)
        {
            if (disposed)
            {
                Release(buffer);
                return;
            }
            if (!free.TryGetValue(buffer.Length, out var stack))
                free[buffer.Length] = stack = new Stack<MemoryBuffer1D<T, Stride1D.Dense>>();
            stack.Push(buffer);
            CachedBytes += buffer.LengthInBytes;
        }
    }

    /// <summary>Frees every parked buffer; returns the bytes released.</summary>
    public long Trim()
    {
        lock (gate)
        {
            long released = CachedBytes;
            foreach (var stack in free.Values)
                while (stack.Count > 0)
                    Release(stack.Pop());
            CachedBytes = 0;
            return released;
        }
    }

    public void Dispose()
    {
        Trim();
        lock (gate)
            disposed = true;
    }
}
