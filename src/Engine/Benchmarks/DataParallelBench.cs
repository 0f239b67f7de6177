using System.Diagnostics;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Distributed;

namespace InFluxEdit.Benchmarks;

/// <summary>
/// Data-parallel training steps against one rank's, in one job: median milliseconds of a step with rank 0 training
/// alone (the others wait) and of a step shared by every rank, with the gradient exchange's part of it.
/// </summary>
/// <param name="ExamplesPerRank">Examples each rank runs per step (the bench's batch).</param>
public sealed record DataParallelBenchResult(string Model, string Device, int Ranks, int ExamplesPerRank, double SingleRankStepMs,
    double SharedStepMs, double ExchangeMs, long GradientValues, string Exchange)
{
    /// <summary>Examples per second of one rank training alone, and of each rank in the shared steps.</summary>
    public double SingleRankExamplesPerSecond => ExamplesPerRank / (SingleRankStepMs / 1000);
    public double ExamplesPerSecondPerRank => ExamplesPerRank / (SharedStepMs / 1000);

    /// <summary>The job's throughput over <see cref="Ranks"/> times one rank's alone (1: perfect scaling).</summary>
    public double ScalingEfficiency => SingleRankStepMs / SharedStepMs;
}

public static class DataParallelBench
{
    /// <summary>
    /// LoRA training steps (forward, backward, AdamW) of <paramref name="settings"/>'s model on seeded random weights:
    /// first on rank 0 alone, then on every rank of <paramref name="group"/> with the gradients summed over the ranks
    /// before the optimizer, as <c>train</c> does. Every rank must call it.
    /// </summary>
    public static DataParallelBenchResult Run(BenchSettings settings, IBackend backend, IProcessGroup group, IProgress<StageProgress>? progress = null)
    {
        using var rig = new LoraBenchRig(settings, backend, Benchmarks.Seed, progress);
        rig.Model.Training = rig.State;
        using var exchanger = GradientExchange.Create(group, backend);
        var exchange = new List<double>();
        // Rank 0 alone while the others wait: the one-rank baseline on the same machine, in the same run.
        double single = group.IsRoot ? Benchmarks.Median(settings, () => rig.Step()) : 0;
        group.Barrier("the end of the one-rank steps", unbounded: true);
        double shared = Benchmarks.Median(settings, () => rig.Step(() =>
        {
            backend.Synchronize();
            var clock = Stopwatch.StartNew();
            exchanger.Sum(rig.Parameters, Span<double>.Empty, "the benchmark's gradient exchange");
            backend.Synchronize();
            exchange.Add(clock.Elapsed.TotalMilliseconds);
        }));
        var exchanges = exchange.Skip(settings.Warmup).Order().ToList();
        return new DataParallelBenchResult(rig.Info.Descriptor.Name, backend.Name, group.Size, settings.Batch, single, shared,
            exchanges[exchanges.Count / 2], rig.Parameters.Sum(p => p.Length), exchanger.Description);
    }
}
