using ILGPU;
using ILGPU.Runtime;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Bytes in host memory that device copies read or fill: page-locked where the accelerator and system allow (copies
/// run at the bus's speed and asynchronously), else a plain array. Offloaded weights and activations moved to host
/// memory live here.
/// </summary>
internal sealed class HostBuffer : IDisposable
{
    private readonly PageLockedArray1D<byte>? pinned;
    private readonly byte[]? pageable;

    private HostBuffer(PageLockedArray1D<byte>? pinned, byte[]? pageable)
    {
        this.pinned = pinned;
        this.pageable = pageable;
    }

    public bool Pinned => pinned is not null;

    public long Length => pinned?.Length ?? pageable!.LongLength;

    /// <summary><paramref name="length"/> bytes, page-locked when <paramref name="pin"/> and the system allows.</summary>
    public static HostBuffer Allocate(Accelerator accelerator, long length, bool pin)
    {
        if (pin)
        {
            try
            {
                return new HostBuffer(accelerator.AllocatePageLocked1D<byte>(length, true), null);
            }
            catch (Exception e) when (e is not ArgumentException)
            {
                // The system limits page-locked memory (ulimit -l, or a host smaller than the model): fall back.
            }
        }
        return new HostBuffer(null, new byte[length]);
    }

    public static HostBuffer Copy(Accelerator accelerator, ReadOnlySpan<byte> bytes, bool pin)
    {
        var host = Allocate(accelerator, bytes.Length, pin);
        bytes.CopyTo(host.pinned is not null ? host.pinned.Span : host.pageable);
        return host;
    }

    /// <summary>Host to device, queued on <paramref name="stream"/> (a pageable copy returns when done).</summary>
    public void CopyTo(ArrayView1D<byte, Stride1D.Dense> place, AcceleratorStream stream)
    {
        if (pinned is not null)
            place.CopyFromPageLockedAsync(stream, pinned);
        else
            place.CopyFromCPU(stream, new ReadOnlySpan<byte>(pageable, 0, checked((int)place.Length)));
    }

    /// <summary>Device to host, queued on <paramref name="stream"/> (a pageable copy returns when done).</summary>
    public void CopyFrom(ArrayView1D<byte, Stride1D.Dense> source, AcceleratorStream stream)
    {
        if (pinned is not null)
            source.CopyToPageLockedAsync(stream, pinned);
        else
            source.CopyToCPU(stream, new Span<byte>(pageable, 0, checked((int)source.Length)));
    }

    public void Dispose() => pinned?.Dispose();
}
