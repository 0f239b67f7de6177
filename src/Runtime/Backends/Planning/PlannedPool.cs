using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Runtime.Backends.Planning;

/// <summary>
/// The bookkeeping of one <see cref="GpuBufferPool{T}"/> without memory: the same size buckets, a returned buffer parked
/// for the next rent of its bucket, parked buffers counted until trimmed, and the same high-water mark.
/// </summary>
internal sealed class PlannedPool(int elementBytes)
{
    private readonly Dictionary<long, int> parked = new();

    /// <summary>Bytes the pool's buffers would take on the device, in use or parked.</summary>
    public long AllocatedBytes { get; private set; }

    /// <summary>Bytes of the buffers rented and not given back (what a pool that trimmed its parked buffers would still need).</summary>
    public long InUseBytes { get; private set; }

    /// <summary>The most <see cref="AllocatedBytes"/> has been since creation or <see cref="ResetPeak"/>.</summary>
    public long PeakBytes { get; private set; }

    /// <summary>Rents a buffer for <paramref name="length"/> elements; returns its bucket (its length in elements).</summary>
    public long Rent(long length)
    {
        long bucket = GpuBufferPool<float>.BucketLength(length);
        InUseBytes += bucket * elementBytes;
        if (parked.TryGetValue(bucket, out int count) && count > 0)
        {
            parked[bucket] = count - 1;
            return bucket;
        }
        AllocatedBytes += bucket * elementBytes;
        PeakBytes = Math.Max(PeakBytes, AllocatedBytes);
        return bucket;
    }

    public void Return(long bucket)
    {
        parked[bucket] = parked.GetValueOrDefault(bucket) + 1;
        InUseBytes -= bucket * elementBytes;
    }

    /// <summary>Frees every parked buffer; returns their bytes.</summary>
    public long Trim()
    {
        long freed = parked.Sum(p => p.Key * elementBytes * p.Value);
        AllocatedBytes -= freed;
        parked.Clear();
        return freed;
    }

    public void ResetPeak() => PeakBytes = AllocatedBytes;
}
