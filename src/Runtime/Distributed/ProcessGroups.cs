using System.Security.Cryptography;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Distributed;

/// <summary>Finding this process's job, and the exchanges data-parallel training makes over any <see cref="IProcessGroup"/>.</summary>
public static class ProcessGroups
{
    /// <summary>The default of <c>--rank-timeout</c>: long enough for the validation edits and checkpoints rank 0 does alone.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(30);

    // Launchers announce a job through the environment: mpirun as OMPI_*, srun with PMIx as PMIX_*.
    private static readonly string[] LauncherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK"];

    /// <summary>Whether an MPI launcher started this process.</summary>
    public static bool LaunchedByMpi => LauncherVariables.Any(name => Environment.GetEnvironmentVariable(name) != null);

    /// <summary>This process's rank as the launcher announced it (before MPI starts), or null outside a launcher.</summary>
    public static int? LauncherRank =>
        new[] { "OMPI_COMM_WORLD_RANK", "PMIX_RANK" }.Select(Environment.GetEnvironmentVariable)
            .Select(value => int.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out int rank) ? rank : (int?)null)
            .FirstOrDefault(rank => rank != null);

    /// <summary>The job this process belongs to: the MPI job that launched it, else a group of one.</summary>
    public static IProcessGroup FromEnvironment(TimeSpan timeout) =>
        LaunchedByMpi ? MpiProcessGroup.Join(timeout) : SingleProcess.Instance;

    /// <summary>Whether any rank's <paramref name="mine"/> is true (every rank gets the same answer).</summary>
    public static bool Any(this IProcessGroup group, bool mine, string what)
    {
        if (group.Size == 1) return mine;
        Span<double> flag = [mine ? 1 : 0];
        group.AllReduceSum(flag, what);
        return flag[0] > 0;
    }

    /// <summary>This rank's part of <paramref name="count"/> items split over the ranks in contiguous, near-equal shares (empty when there are fewer items than ranks).</summary>
    public static Range Share(this IProcessGroup group, int count) =>
        new((int)((long)count * group.Rank / group.Size), (int)((long)count * (group.Rank + 1) / group.Size));

    /// <summary>
    /// Replaces every gradient (and <paramref name="scalars"/>) on every rank by its sum over the ranks, staged through
    /// host memory in buckets of at most <paramref name="bucketValues"/> values (one collective each, not one per tensor).
    /// </summary>
    public static void AllReduceGradients(this IProcessGroup group, IBackend backend, IReadOnlyList<TrainableParameter> parameters,
        Span<double> scalars, string what, int bucketValues = 1 << 24)
    {
        if (group.Size == 1) return;
        if (!scalars.IsEmpty) group.AllReduceSum(scalars, what);
        var bucket = new List<(TrainableParameter Parameter, HostTensor Gradient)>();
        long filled = 0;
        void Flush()
        {
            if (bucket.Count == 0) return;
            var values = bucket.Count == 1 ? bucket[0].Gradient.Data : new float[filled];
            if (bucket.Count > 1)
            {
                long offset = 0;
                foreach (var (_, gradient) in bucket)
                {
                    gradient.Data.CopyTo(values, offset);
                    offset += gradient.Data.Length;
                }
            }
            group.AllReduceSum(values, what);
            long start = 0;
            foreach (var (parameter, gradient) in bucket)
            {
                if (bucket.Count > 1) Array.Copy(values, start, gradient.Data, 0, gradient.Data.Length);
                start += gradient.Data.Length;
                TensorTransfer.Overwrite(backend, parameter.Gradient, gradient);
            }
            bucket.Clear();
            filled = 0;
        }
        foreach (var parameter in parameters)
        {
            if (filled + parameter.Length > bucketValues) Flush();
            bucket.Add((parameter, TensorTransfer.Download(backend, parameter.Gradient)));
            filled += parameter.Length;
        }
        Flush();
    }

    /// <summary>
    /// Refuses to go on unless every rank holds what rank 0 holds: each item is a name ("the training options") and
    /// a SHA-256 digest of this rank's value (<see cref="StateDigest"/>); the first item that differs is named with
    /// the ranks that differ.
    /// </summary>
    public static void RequireAgreement(this IProcessGroup group, IReadOnlyList<(string What, byte[] Digest)> items, string remedy)
    {
        if (group.Size == 1) return;
        int size = SHA256.HashSizeInBytes;
        if (items.Any(item => item.Digest.Length != size)) throw new ArgumentException("every item's digest must be a SHA-256 digest", nameof(items));
        // Ranks load their weights at their own pace: the wait for the slowest is not a hang.
        group.Barrier("the start of training", unbounded: true);
        var all = group.AllGather(items.SelectMany(item => item.Digest).ToArray(), "the check that every rank starts alike");
        for (int item = 0; item < items.Count; item++)
        {
            var differing = Enumerable.Range(1, group.Size - 1)
                .Where(rank => !all[rank].AsSpan(item * size, size).SequenceEqual(all[0].AsSpan(item * size, size))).ToList();
            if (differing.Count > 0)
                throw new ProcessGroupException($"rank {string.Join(", ", differing)} {(differing.Count == 1 ? "has" : "have")} other {items[item].What} than rank 0: {remedy}")
                {
                    SeenByEveryRank = true,
                };
        }
    }
}
