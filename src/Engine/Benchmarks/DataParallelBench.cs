using System.Diagnostics;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

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
    private const int Seed = 1234;

    /// <summary>
    /// LoRA training steps (forward, backward, AdamW) of <paramref name="settings"/>'s model on seeded random weights:
    /// first on rank 0 alone, then on every rank of <paramref name="group"/> with the gradients summed over the ranks
    /// before the optimizer, as <c>train</c> does. Every rank must call it.
    /// </summary>
    public static DataParallelBenchResult Run(BenchSettings settings, IBackend backend, IProcessGroup group, IProgress<StageProgress>? progress = null)
    {
        var info = Benchmarks.Compiled(settings.Model);
        var training = backend as ITrainingBackend
            ?? throw new NotSupportedException($"the {backend.Name} backend has no training ops: bench train runs with --device cpu or --device cuda");
        var weights = RandomWeights.Upload(info.Descriptor, backend, Seed, StageProgress.Of(progress, "random weights", "tensors"));
        var inputs = BenchInputs.Create(info.Descriptor, settings.Batch, settings.ImageTokens, settings.TextTokens)
            .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
        var targets = LoraTargets.Preset(settings.Preset, info.Descriptor);
        var parameters = LoraInit.Create(backend, targets, settings.Rank, LoraInit.KindOf(settings.Preset, info.Descriptor), new TrainingRandom(Seed));
        var model = info.Create(backend, weights);
        model.Training = LoraInit.Attach(targets, parameters, scale: 1f);
        using var optimizer = new AdamW(training);
        using var exchanger = GradientExchange.Create(group, backend);
        try
        {
            var exchange = new List<double>();
            double Step(bool shared)
            {
                var clock = Stopwatch.StartNew();
                foreach (var p in parameters) training.Scale(p.Gradient, 0f);
                model.ForwardBackward(inputs, output => backend.Upload(new HostTensor(output.Shape)));
                backend.Synchronize();
                if (shared)
                {
                    var exchangeClock = Stopwatch.StartNew();
                    exchanger.Sum(parameters, Span<double>.Empty, "the benchmark's gradient exchange");
                    backend.Synchronize();
                    exchange.Add(exchangeClock.Elapsed.TotalMilliseconds);
                }
                optimizer.Step(parameters, AdamW.DefaultLearningRate);
                backend.Synchronize();
                return clock.Elapsed.TotalMilliseconds;
            }
            double Median(bool shared)
            {
                var times = Enumerable.Range(0, settings.Warmup + settings.Runs).Select(_ => Step(shared)).Skip(settings.Warmup).Order().ToList();
                return times[times.Count / 2];
            }
            // Rank 0 alone while the others wait: the one-rank baseline on the same machine, in the same run.
            double single = group.IsRoot ? Median(shared: false) : 0;
            group.Barrier("the end of the one-rank steps", unbounded: true);
            double sharedStep = Median(shared: true);
            var exchanges = exchange.Skip(settings.Warmup).Order().ToList();
            return new DataParallelBenchResult(info.Descriptor.Name, backend.Name, group.Size, settings.Batch, single, sharedStep,
                exchanges[exchanges.Count / 2], parameters.Sum(p => p.Length), exchanger.Description);
        }
        finally
        {
            model.Training = null;
            foreach (var p in parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
            foreach (var t in inputs.Values) t.Dispose();
            foreach (var w in weights.Values) w.Dispose();
        }
    }
}
