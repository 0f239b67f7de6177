using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Distributed;

/// <summary>
/// The ranks of a job started by <c>mpirun</c> (or <c>srun</c> with PMIx), over Open MPI. Every collective is
/// non-blocking and polled, so a rank that never arrives is noticed: each other rank reports its arrival at a
/// collective to rank 0, and rank 0 names the ranks missing when <see cref="Timeout"/> runs out (the others wait a
/// little longer, then name rank 0). A rank that dies is Open MPI's to notice: <c>mpirun</c> ends the job.
/// </summary>
public sealed unsafe class MpiProcessGroup : IProcessGroup
{
    private const int ArrivalTag = 7001;
    // Largest element count of one MPI call (its counts are ints); longer buffers go in pieces.
    private const int MaxCount = 1 << 28;

    private readonly OpenMpi _mpi;
    private readonly long* _arrivals; // rank 0: the collective each rank last reported; others: their own report
    private long _collective;
    private bool _disposed;

    private MpiProcessGroup(OpenMpi mpi, TimeSpan timeout)
    {
        _mpi = mpi;
        Rank = mpi.Rank();
        Size = mpi.Size();
        Timeout = timeout;
        LocalRank = int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK") ?? Environment.GetEnvironmentVariable("SLURM_LOCALID"),
            CultureInfo.InvariantCulture, out int local) ? local : 0;
        _arrivals = (long*)NativeMemory.AllocZeroed((nuint)Size, sizeof(long));
    }

    /// <summary>Joins the job this process was launched into (MPI_Init).</summary>
    public static MpiProcessGroup Join(TimeSpan timeout) => new(OpenMpi.Initialize(), timeout);

    public int Rank { get; }
    public int Size { get; }
    public int LocalRank { get; }
    public string Host { get; } = Environment.MachineName;

    /// <summary>How long rank 0 waits for the last rank to arrive at a collective before it ends the job.</summary>
    public TimeSpan Timeout { get; }

    public void AllReduceSum(Span<float> values, string what) => AllReduceSum(values, _mpi.Float, what);

    public void AllReduceSum(Span<double> values, string what) => AllReduceSum(values, _mpi.Double, what);

    private void AllReduceSum<T>(Span<T> values, nint datatype, string what) where T : unmanaged
    {
        fixed (T* start = values)
            for (int offset = 0; offset < values.Length; offset += MaxCount)
            {
                int count = Math.Min(MaxCount, values.Length - offset);
                Await(_mpi.AllReduce(start + offset, count, datatype), what, unbounded: false);
            }
    }

    public byte[][] AllGather(ReadOnlySpan<byte> mine, string what)
    {
        var all = new byte[mine.Length * Size];
        fixed (byte* source = mine)
        fixed (byte* destination = all)
            Await(_mpi.AllGather(source, destination, mine.Length), what, unbounded: false);
        int length = mine.Length;
        return Enumerable.Range(0, Size).Select(rank => all.AsSpan(rank * length, length).ToArray()).ToArray();
    }

    public void Broadcast(Span<byte> buffer, int root, string what)
    {
        fixed (byte* start = buffer)
            Await(_mpi.Broadcast(start, buffer.Length, root), what, unbounded: false);
    }

    public void Barrier(string what, bool unbounded = false) => Await(_mpi.Barrier(), what, unbounded);

    public void Abort(int exitCode) => _mpi.Abort(exitCode);

    /// <summary>
    /// Polls a started collective to the end. Alongside it, every rank but 0 sends rank 0 the collective's
    /// sequence number, so rank 0 can tell which ranks never came, and that all came to the same collective.
    /// </summary>
    private void Await(nint request, string what, bool unbounded)
    {
        long sequence = ++_collective;
        var arrivals = new nint[Size];
        if (Rank == 0)
            for (int rank = 1; rank < Size; rank++) arrivals[rank] = _mpi.Receive(_arrivals + rank, rank, ArrivalTag);
        else
        {
            _arrivals[Rank] = sequence;
            arrivals[Rank] = _mpi.Send(_arrivals + Rank, 0, ArrivalTag);
        }
        // Rank 0 knows who is missing; the others wait longer so that rank 0's report comes first.
        var limit = unbounded ? System.Threading.Timeout.InfiniteTimeSpan : Rank == 0 ? Timeout : Timeout * 1.5 + TimeSpan.FromSeconds(5);
        var clock = Stopwatch.StartNew();
        for (int polls = 0; ; polls++)
        {
            bool done = _mpi.Test(ref request);
            for (int rank = 0; rank < Size; rank++) done &= _mpi.Test(ref arrivals[rank]);
            if (done) break;
            if (limit != System.Threading.Timeout.InfiniteTimeSpan && clock.Elapsed > limit)
            {
                var missing = Enumerable.Range(1, Size - 1).Where(rank => arrivals[rank] != 0).ToList();
                throw new ProcessGroupException(Rank == 0
                    ? $"rank {string.Join(", ", missing)} did not reach {what} within {Describe(limit)} of rank 0 (hung or far behind): ending the job (--rank-timeout sets the wait)"
                    : $"rank {Rank} on {Host} waited {Describe(limit)} at {what} for rank 0 (hung or far behind): ending the job (--rank-timeout sets the wait)");
            }
            // A short spin keeps fast collectives fast; then sleep, so that a waiting rank leaves the cores to the others.
            if (polls < 200) Thread.Yield();
            else Thread.Sleep(1);
        }
        if (Rank == 0)
            for (int rank = 1; rank < Size; rank++)
                if (_arrivals[rank] != sequence)
                    throw new ProcessGroupException(
                        $"rank {rank} is at collective {_arrivals[rank]} where rank 0 is at {sequence} ({what}): the ranks run different code paths (options or data differ)");
    }

    private static string Describe(TimeSpan span) => span.TotalSeconds < 120
        ? $"{span.TotalSeconds:0} s" : $"{span.TotalMinutes:0.#} min";

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _mpi.Shutdown();
        NativeMemory.Free(_arrivals);
    }
}
