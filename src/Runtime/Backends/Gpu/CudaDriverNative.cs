using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The CUDA driver calls weight offloading needs and ILGPU 1.5.3 does not expose: events recorded on one stream and
/// waited for by another (ILGPU has no cuStreamWaitEvent), and the device's free memory. Bound at run time from the
/// driver library ILGPU itself loads, as cuBLAS and NCCL are bound, so nothing is touched on a machine without CUDA.
/// Every call uses the CUDA context current on the calling thread (the backend binds its accelerator first).
/// </summary>
internal sealed unsafe class CudaDriverNative
{
    private const uint EventDisableTiming = 0x2; // CU_EVENT_DISABLE_TIMING: an ordering point, no timestamp to take

    private readonly delegate* unmanaged<IntPtr*, uint, int> eventCreate;
    private readonly delegate* unmanaged<IntPtr, int> eventDestroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> eventRecord;
    private readonly delegate* unmanaged<IntPtr, IntPtr, uint, int> streamWaitEvent;
    private readonly delegate* unmanaged<nuint*, nuint*, int> memGetInfo;

    private CudaDriverNative(IntPtr library)
    {
        IntPtr Export(string name) => NativeLibrary.GetExport(library, name);
        eventCreate = (delegate* unmanaged<IntPtr*, uint, int>)Export("cuEventCreate");
        eventDestroy = (delegate* unmanaged<IntPtr, int>)Export("cuEventDestroy_v2");
        eventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("cuEventRecord");
        streamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)Export("cuStreamWaitEvent");
        memGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)Export("cuMemGetInfo_v2");
    }

    private static readonly Lazy<CudaDriverNative> Shared = new(() =>
    {
        string name = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
        return NativeLibrary.TryLoad(name, out IntPtr library)
            ? new CudaDriverNative(library)
            : throw new InvalidOperationException($"the CUDA driver ({name}) could not be loaded");
    });

    /// <summary>The driver's calls; only reached from a backend on a CUDA accelerator, where the driver is loaded.</summary>
    public static CudaDriverNative Instance => Shared.Value;

    public IntPtr CreateEvent()
    {
        IntPtr created;
        Check(eventCreate(&created, EventDisableTiming), "cuEventCreate");
        return created;
    }

    public void DestroyEvent(IntPtr cudaEvent) => Check(eventDestroy(cudaEvent), "cuEventDestroy");

    /// <summary>Marks the point in <paramref name="stream"/>'s queue reached when everything enqueued so far has run.</summary>
    public void Record(IntPtr cudaEvent, IntPtr stream) => Check(eventRecord(cudaEvent, stream), "cuEventRecord");

    /// <summary>Makes work enqueued later on <paramref name="stream"/> wait for the event's last recorded point.</summary>
    public void Wait(IntPtr stream, IntPtr cudaEvent) => Check(streamWaitEvent(stream, cudaEvent, 0), "cuStreamWaitEvent");

    /// <summary>Free and total bytes of the current context's device.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        nuint free, total;
        Check(memGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    private static void Check(int status, string call)
    {
        if (status != 0)
            throw new InvalidOperationException($"{call} failed with CUDA error {status}");
    }
}
