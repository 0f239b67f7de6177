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

    /// <summary>
    /// Σ over [0, count) of float64 vectors of <paramref name="length"/>: body(start, end, partial) adds its range into
    /// a zeroed partial; the partials are summed in range order, so the result does not depend on which thread
    /// finished first (training runs resume bit for bit).
    /// </summary>
    public static double[] SumRanges(int count, long workPerItem, int length, Action<int, int, double[]> body)
    {
        var partials = new List<(int Start, double[] Sum)>();
        ForRanges(count, workPerItem, (start, end) =>
        {
            var partial = new double[length];
            body(start, end, partial);
            lock (partials) partials.Add((start, partial));
        });
        var total = new double[length];
        foreach (var (_, partial) in partials.OrderBy(p => p.Start))
            for (int i = 0; i < length; i++) total[i] += partial[i];
        return total;
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
