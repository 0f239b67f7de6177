namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// How CPU ops share the cores. Work is cut into at most a few chunks per thread, never one task per row:
/// on a 2-core machine the scheduling cost of fine-grained tasks is larger than most row ops.
/// </summary>
internal static class CpuParallel
{
    public static readonly int ThreadCount = Math.Max(1, Environment.ProcessorCount);

    private static readonly ParallelOptions Options = new() { MaxDegreeOfParallelism = ThreadCount };

    /// <summary>Below this many elements of work a row op runs on the calling thread.</summary>
    public const long SerialElementThreshold = 1 << 15;

    /// <summary>Runs body(start, end) over [0, count) in contiguous ranges, in parallel when the work is large.</summary>
    public static void ForRanges(int count, long workPerItem, Action<int, int> body)
    {
        if (count <= 0) return;
        long totalWork = count * Math.Max(1, workPerItem);
        int chunks = (int)Math.Min(count, totalWork < SerialElementThreshold ? 1 : ThreadCount * 4L);
        if (chunks <= 1 || ThreadCount == 1)
        {
            body(0, count);
            return;
        }
        Parallel.For(0, chunks, Options, chunk =>
        {
            int start = (int)((long)count * chunk / chunks);
            int end = (int)((long)count * (chunk + 1) / chunks);
            if (end > start) body(start, end);
        });
    }

    /// <summary>Runs body(i) for i in [0, count), one task each (count is already a handful of coarse tasks).</summary>
    public static void ForTasks(int count, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || ThreadCount == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, Options, body);
    }
}
