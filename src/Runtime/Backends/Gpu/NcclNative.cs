using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The NCCL calls a gradient all-reduce needs, bound at run time to <c>libnccl.so.2</c> (NVIDIA's package, or the
/// <c>nvidia-nccl</c> wheel's <c>lib</c> folder on <c>LD_LIBRARY_PATH</c>), as cuBLAS is: nothing is bound until a
/// data-parallel run on CUDA asks for it.
/// </summary>
internal sealed unsafe class NcclNative
{
    private static readonly string[] LinuxNames = ["libnccl.so.2", "libnccl.so"];
    private const int Float32 = 7; // ncclFloat32
    private const int Sum = 0;     // ncclSum
    private const int Success = 0;

    /// <summary>ncclUniqueId: 128 opaque bytes rank 0 makes and every rank passes to ncclCommInitRank.</summary>
    [StructLayout(LayoutKind.Sequential, Size = UniqueIdBytes)]
    public struct UniqueId
    {
        private fixed byte _internal[UniqueIdBytes];
    }

    public const int UniqueIdBytes = 128;

    private readonly delegate* unmanaged<UniqueId*, int> _getUniqueId;
    private readonly delegate* unmanaged<nint*, int, UniqueId, int, int> _commInitRank;
    private readonly delegate* unmanaged<nint, int> _commDestroy;
    private readonly delegate* unmanaged<nint, int> _commAbort;
    private readonly delegate* unmanaged<nint, int*, int> _commGetAsyncError;
    private readonly delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int> _allReduce;
    private readonly delegate* unmanaged<int> _groupStart, _groupEnd;
    private readonly delegate* unmanaged<int, byte*> _getErrorString;

    private NcclNative(nint library)
    {
        nint Export(string name) => NativeLibrary.GetExport(library, name);
        _getUniqueId = (delegate* unmanaged<UniqueId*, int>)Export("ncclGetUniqueId");
        _commInitRank = (delegate* unmanaged<nint*, int, UniqueId, int, int>)Export("ncclCommInitRank");
        _commDestroy = (delegate* unmanaged<nint, int>)Export("ncclCommDestroy");
        _commAbort = (delegate* unmanaged<nint, int>)Export("ncclCommAbort");
        _commGetAsyncError = (delegate* unmanaged<nint, int*, int>)Export("ncclCommGetAsyncError");
        _allReduce = (delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int>)Export("ncclAllReduce");
        _groupStart = (delegate* unmanaged<int>)Export("ncclGroupStart");
        _groupEnd = (delegate* unmanaged<int>)Export("ncclGroupEnd");
        _getErrorString = (delegate* unmanaged<int, byte*>)Export("ncclGetErrorString");
    }

    /// <summary>The library, or null with the reason it could not be loaded.</summary>
    public static NcclNative? TryLoad(out string reason)
    {
        foreach (string name in LinuxNames)
            if (NativeLibrary.TryLoad(name, out nint library))
            {
                reason = name;
                return new NcclNative(library);
            }
        reason = $"NCCL ({string.Join(" or ", LinuxNames)}) is not on the library path: install NVIDIA's libnccl2 or add the nvidia-nccl wheel's lib folder to LD_LIBRARY_PATH";
        return null;
    }

    public UniqueId NewUniqueId()
    {
        UniqueId id;
        Check(_getUniqueId(&id), "ncclGetUniqueId");
        return id;
    }

    /// <summary>Joins the communicator of <paramref name="ranks"/> ranks on the calling thread's current CUDA device.</summary>
    public nint InitRank(int ranks, UniqueId id, int rank)
    {
        nint communicator;
        Check(_commInitRank(&communicator, ranks, id, rank), "ncclCommInitRank");
        return communicator;
    }

    public void GroupStart() => Check(_groupStart(), "ncclGroupStart");
    public void GroupEnd() => Check(_groupEnd(), "ncclGroupEnd");

    /// <summary>Enqueues an in-place float32 sum of <paramref name="count"/> values at <paramref name="buffer"/> on <paramref name="stream"/>.</summary>
    public void AllReduceSumInPlace(nint buffer, long count, nint communicator, nint stream) =>
        Check(_allReduce((void*)buffer, (void*)buffer, (nuint)count, Float32, Sum, communicator, stream), "ncclAllReduce");

    /// <summary>An error NCCL met while the enqueued work ran (a peer gone, a network failure), or null.</summary>
    public string? AsyncError(nint communicator)
    {
        int error;
        Check(_commGetAsyncError(communicator, &error), "ncclCommGetAsyncError");
        return error == Success ? null : Describe(error);
    }

    public void Destroy(nint communicator) => _commDestroy(communicator);

    public void Abort(nint communicator) => _commAbort(communicator);

    private string Describe(int code) => $"{Marshal.PtrToStringUTF8((nint)_getErrorString(code))} (NCCL result {code})";

    private void Check(int code, string call)
    {
        if (code != Success) throw new InvalidOperationException($"{call} failed: {Describe(code)}");
    }
}
