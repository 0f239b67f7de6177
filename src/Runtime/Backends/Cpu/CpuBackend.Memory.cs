namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>The allocated-bytes count of the buffer pool, which every activation tensor is rented from.</summary>
public sealed partial class CpuBackend : IMemoryStatistics
{
    public long AllocatedBytes => _pool.RentedBytes;

    public long PeakAllocatedBytes => _pool.PeakRentedBytes;

    public void ResetPeak() => _pool.ResetPeak();
}
