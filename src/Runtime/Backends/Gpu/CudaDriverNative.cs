using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The CUDA driver calls ILGPU 1.5.3 does not expose: events recorded on one stream and waited for by another (ILGPU
/// has no cuStreamWaitEvent) for weight offloading, the device's free memory, and a module load that keeps the JIT's
/// logs and reads each kernel's registers and local memory (ILGPU's own load keeps neither). Bound at run time from the
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
    private readonly delegate* unmanaged<IntPtr*, byte*, uint, int*, IntPtr*, int> moduleLoadDataEx;
    private readonly delegate* unmanaged<IntPtr, int> moduleUnload;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, byte*, int> moduleGetFunction;
    private readonly delegate* unmanaged<int*, int, IntPtr, int> functionGetAttribute;

    private CudaDriverNative(IntPtr library)
    {
        IntPtr Export(string name) => NativeLibrary.GetExport(library, name);
        eventCreate = (delegate* unmanaged<IntPtr*, uint, int>)Export("cuEventCreate");
        eventDestroy = (delegate* unmanaged<IntPtr, int>)Export("cuEventDestroy_v2");
        eventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("cuEventRecord");
        streamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)Export("cuStreamWaitEvent");
        memGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)Export("cuMemGetInfo_v2");
        moduleLoadDataEx = (delegate* unmanaged<IntPtr*, byte*, uint, int*, IntPtr*, int>)Export("cuModuleLoadDataEx");
        moduleUnload = (delegate* unmanaged<IntPtr, int>)Export("cuModuleUnload");
        moduleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)Export("cuModuleGetFunction");
        functionGetAttribute = (delegate* unmanaged<int*, int, IntPtr, int>)Export("cuFuncGetAttribute");
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

    /// <summary>
    /// JIT-compiles <paramref name="ptx"/> into the current context as the driver does at a kernel's first launch, then
    /// reads <paramref name="entry"/>'s resources and unloads the module. On failure: the JIT's error log (ptxas's
    /// messages with their PTX line numbers), which a plain load discards.
    /// </summary>
    public JitResult JitCompile(string ptx, string entry)
    {
        const int logBytes = 16 * 1024;
        byte[] image = System.Text.Encoding.ASCII.GetBytes(ptx + "\0");
        byte[] name = System.Text.Encoding.ASCII.GetBytes(entry + "\0");
        byte[] errorLog = new byte[logBytes], infoLog = new byte[logBytes];
        fixed (byte* imagePointer = image, namePointer = name, errorPointer = errorLog, infoPointer = infoLog)
        {
            // CU_JIT_INFO_LOG_BUFFER(_SIZE_BYTES) = 3, 4; CU_JIT_ERROR_LOG_BUFFER(_SIZE_BYTES) = 5, 6; CU_JIT_LOG_VERBOSE = 12.
            // Each option's value travels in a pointer-sized slot.
            int* options = stackalloc int[] { 3, 4, 5, 6, 12 };
            IntPtr* values = stackalloc IntPtr[] { (IntPtr)infoPointer, logBytes, (IntPtr)errorPointer, logBytes, 1 };
            IntPtr module;
            int status = moduleLoadDataEx(&module, imagePointer, 5, options, values);
            if (status != 0)
                return new JitResult(false, $"cuModuleLoadDataEx failed with CUDA error {status}: {LogText(errorLog)}", 0, 0, 0, 0);
            try
            {
                IntPtr function;
                Check(moduleGetFunction(&function, module, namePointer), "cuModuleGetFunction");
                // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0, SHARED_SIZE_BYTES = 1, LOCAL_SIZE_BYTES = 3, NUM_REGS = 4.
                return new JitResult(true, LogText(infoLog), Attribute(function, 4), Attribute(function, 3), Attribute(function, 1),
                    Attribute(function, 0));
            }
            finally
            {
                moduleUnload(module);
            }
        }
    }

    private int Attribute(IntPtr function, int attribute)
    {
        int value;
        Check(functionGetAttribute(&value, attribute, function), "cuFuncGetAttribute");
        return value;
    }

    private static string LogText(byte[] log)
    {
        int end = Array.IndexOf(log, (byte)0);
        return System.Text.Encoding.ASCII.GetString(log, 0, end < 0 ? log.Length : end).Trim();
    }

    private static void Check(int status, string call)
    {
        if (status != 0)
            throw new InvalidOperationException($"{call} failed with CUDA error {status}");
    }
}

/// <summary>
/// What the driver's JIT made of one kernel: whether it compiled, its log (the error log on failure, ptxas's
/// info otherwise), and per thread its registers and local memory (register spills land there), the static shared
/// memory of a group and the most threads a group may have with those registers.
/// </summary>
internal sealed record JitResult(bool Compiled, string Log, int Registers, int LocalBytesPerThread, int SharedBytes, int MaxThreadsPerGroup);

