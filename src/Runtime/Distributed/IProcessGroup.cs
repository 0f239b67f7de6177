namespace InFluxEdit.Runtime.Distributed;

/// <summary>
/// The processes of one job (ranks 0 … <see cref="Size"/> − 1) and the collectives data-parallel training needs. Every
/// rank calls the same collectives in the same order; <c>what</c> names the collective in the error a rank that never
/// arrives causes. A single process is a group of one whose collectives return at once.
/// </summary>
public interface IProcessGroup : IDisposable
{
    int Rank { get; }
    int Size { get; }

    /// <summary>This rank's index among the ranks on its machine: which GPU it takes.</summary>
    int LocalRank { get; }

    /// <summary>The machine this rank runs on, for messages.</summary>
    string Host { get; }

    bool IsRoot => Rank == 0;

    /// <summary>Replaces <paramref name="values"/> on every rank by their element-wise sum over the ranks.</summary>
    void AllReduceSum(Span<float> values, string what);

    /// <summary>Replaces <paramref name="values"/> on every rank by their element-wise sum over the ranks.</summary>
    void AllReduceSum(Span<double> values, string what);

    /// <summary>Every rank's <paramref name="mine"/> (all of one length), indexed by rank.</summary>
    byte[][] AllGather(ReadOnlySpan<byte> mine, string what);

    /// <summary>Rank <paramref name="root"/>'s <paramref name="buffer"/> into every rank's (all of one length).</summary>
    void Broadcast(Span<byte> buffer, int root, string what);

    /// <summary>
    /// Waits until every rank arrives. <paramref name="unbounded"/> waits as long as it takes (rank 0 doing the job's
    /// one-off work, such as building caches) instead of the group's timeout.
    /// </summary>
    void Barrier(string what, bool unbounded = false);

    /// <summary>Ends every rank of the job at once with <paramref name="exitCode"/> (after this rank's error was printed).</summary>
    void Abort(int exitCode);
}

/// <summary>A group of one: training in one process, with nothing to exchange.</summary>
public sealed class SingleProcess : IProcessGroup
{
    public static readonly SingleProcess Instance = new();

    private SingleProcess() { }

    public int Rank => 0;
    public int Size => 1;
    public int LocalRank => 0;
    public string Host => Environment.MachineName;

    public void AllReduceSum(Span<float> values, string what) { }
    public void AllReduceSum(Span<double> values, string what) { }
    public byte[][] AllGather(ReadOnlySpan<byte> mine, string what) => [mine.ToArray()];
    public void Broadcast(Span<byte> buffer, int root, string what) { }
    public void Barrier(string what, bool unbounded = false) { }
    public void Abort(int exitCode) => Environment.Exit(exitCode);
    public void Dispose() { }
}

/// <summary>A rank failed to arrive at a collective in time, or the ranks disagree: the job cannot go on.</summary>
public sealed class ProcessGroupException(string message) : Exception(message)
{
    /// <summary>Every rank throws this same error (a collective check failed): rank 0 alone need report it.</summary>
    public bool SeenByEveryRank { get; init; }
}
