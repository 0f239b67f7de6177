namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// A backend that counts the activation memory it hands out (tensors from Allocate and Upload, not weights), for
/// reporting a pass's peak: bench train compares training with and without recomputation by it. The CPU counts live
/// tensors; a GPU counts what its buffer pools hold on the device, parked buffers included.
/// </summary>
public interface IMemoryStatistics
{
    /// <summary>Bytes of activation tensors allocated and not yet disposed.</summary>
    long AllocatedBytes { get; }

    /// <summary>The most <see cref="AllocatedBytes"/> has been since the backend was made or <see cref="ResetPeak"/>.</summary>
    long PeakAllocatedBytes { get; }

    /// <summary>Starts a new high-water mark at the current <see cref="AllocatedBytes"/>.</summary>
    void ResetPeak();
}
