using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Distributed;

/// <summary>
/// The few MPI calls data-parallel training makes, bound at run time to Open MPI's <c>libmpi.so.40</c> (Debian's
/// <c>openmpi-bin</c>). Open MPI's handles (communicator, datatypes, operations) are the addresses of its predefined
/// objects, so they are read as exports; a machine without the library gets a one-line error only when a job is
/// launched under <c>mpirun</c>, never otherwise.
/// </summary>
internal sealed unsafe class OpenMpi
{
    public const string LibraryName = "libmpi.so.40";
    private const int ThreadSerialized = 2;
    private const int Success = 0;

    public readonly nint CommWorld, Float, Double, Byte, Long, Sum;
    public static readonly nint InPlace = 1;

    private readonly delegate* unmanaged<int*, nint, int, int*, int> _initThread;
    private readonly delegate* unmanaged<int*, int> _initialized;
    private readonly delegate* unmanaged<int*, int> _finalized;
    private readonly delegate* unmanaged<int> _finalize;
    private readonly delegate* unmanaged<nint, int*, int> _commRank, _commSize;
    private readonly delegate* unmanaged<nint, int, int> _abort;
    private readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int> _iallreduce;
    private readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int> _iallgather;
    private readonly delegate* unmanaged<void*, int, nint, int, nint, nint*, int> _ibcast;
    private readonly delegate* unmanaged<nint, nint*, int> _ibarrier;
    private readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> _isend, _irecv;
    private readonly delegate* unmanaged<nint*, int*, void*, int> _test;

    private OpenMpi(nint library)
    {
        nint Export(string name) => NativeLibrary.GetExport(library, name);
        CommWorld = Export("ompi_mpi_comm_world");
        Float = Export("ompi_mpi_float");
        Double = Export("ompi_mpi_double");
        Byte = Export("ompi_mpi_byte");
        Long = Export("ompi_mpi_long");
        Sum = Export("ompi_mpi_op_sum");
        _initThread = (delegate* unmanaged<int*, nint, int, int*, int>)Export("MPI_Init_thread");
        _initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        _finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        _commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        _abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
        _iallreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int>)Export("MPI_Iallreduce");
        _iallgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int>)Export("MPI_Iallgather");
        _ibcast = (delegate* unmanaged<void*, int, nint, int, nint, nint*, int>)Export("MPI_Ibcast");
        _ibarrier = (delegate* unmanaged<nint, nint*, int>)Export("MPI_Ibarrier");
        _isend = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Export("MPI_Isend");
        _irecv = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Export("MPI_Irecv");
        _test = (delegate* unmanaged<nint*, int*, void*, int>)Export("MPI_Test");
    }

    /// <summary>Loads the library and initialises MPI for calls from one thread at a time.</summary>
    public static OpenMpi Initialize()
    {
        if (!NativeLibrary.TryLoad(LibraryName, out nint library))
            throw new DllNotFoundException(
                $"this process was started by an MPI launcher, but Open MPI's {LibraryName} cannot be loaded: install Open MPI (Debian: apt-get install openmpi-bin) on every machine of the job");
        var mpi = new OpenMpi(library);
        int initialized, provided;
        mpi.Check(mpi._initialized(&initialized), "MPI_Initialized");
        if (initialized == 0) mpi.Check(mpi._initThread(null, 0, ThreadSerialized, &provided), "MPI_Init_thread");
        return mpi;
    }

    public int Rank()
    {
        int rank;
        Check(_commRank(CommWorld, &rank), "MPI_Comm_rank");
        return rank;
    }

    public int Size()
    {
        int size;
        Check(_commSize(CommWorld, &size), "MPI_Comm_size");
        return size;
    }

    public nint AllReduce(void* values, int count, nint datatype)
    {
        nint request;
        Check(_iallreduce((void*)InPlace, values, count, datatype, Sum, CommWorld, &request), "MPI_Iallreduce");
        return request;
    }

    public nint AllGather(void* mine, void* all, int bytesEach)
    {
        nint request;
        Check(_iallgather(mine, bytesEach, Byte, all, bytesEach, Byte, CommWorld, &request), "MPI_Iallgather");
        return request;
    }

    public nint Broadcast(void* buffer, int bytes, int root)
    {
        nint request;
        Check(_ibcast(buffer, bytes, Byte, root, CommWorld, &request), "MPI_Ibcast");
        return request;
    }

    public nint Barrier()
    {
        nint request;
        Check(_ibarrier(CommWorld, &request), "MPI_Ibarrier");
        return request;
    }

    public nint Send(long* value, int destination, int tag)
    {
        nint request;
        Check(_isend(value, 1, Long, destination, tag, CommWorld, &request), "MPI_Isend");
        return request;
    }

    public nint Receive(long* value, int source, int tag)
    {
        nint request;
        Check(_irecv(value, 1, Long, source, tag, CommWorld, &request), "MPI_Irecv");
        return request;
    }

    /// <summary>Whether the request finished (a finished request's handle becomes null); drives MPI's progress.</summary>
    public bool Test(ref nint request)
    {
        if (request == 0) return true;
        int done;
        fixed (nint* handle = &request) Check(_test(handle, &done, null), "MPI_Test");
        return done != 0;
    }

    public void Abort(int exitCode) => _abort(CommWorld, exitCode);

    public void Shutdown()
    {
        int finalized;
        Check(_finalized(&finalized), "MPI_Finalized");
        if (finalized == 0) Check(_finalize(), "MPI_Finalize");
    }

    // MPI's default error handler ends the job on a failed call, so an error code here means a broken installation.
    private void Check(int code, string call)
    {
        if (code != Success) throw new ProcessGroupException($"{call} failed with MPI error {code}");
    }
}
