using System.Globalization;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// Data-parallel training under mpirun on the CPU: two ranks sharing each batch train the LoRA one process trains
/// on the same examples, a rank that dies or hangs ends the job with its name, a checkpoint of the job resumes in one
/// process, and ranks started differently are refused. (On a 2-core machine this is about correctness, not speed.)
/// </summary>
public class DataParallelTrainingTests
{
    private static TrainOptions Options(TempDir dir, string output, int steps)
    {
        var options = TrainCommandTests.Options(dir, output, EditMethod.Channel, steps);
        // Landscape and portrait pairs: odd buckets leave a rank without an example in some batches.
        options.Data = Directory.Exists(dir.File("pairs")) ? dir.File("pairs") : BatchGradientTests.Pairs(dir);
        options.LearningRate = 1e-4;
        options.ExportDType = "f32";
        return options;
    }

    /// <summary>The same options as command-line arguments, for the ranks.</summary>
    private static string[] Arguments(TrainOptions options, params string[] extra) =>
    [
        "train", "--weights", options.Weights!, "--vae", options.Vae!, "--data", options.Data!, "--text-embeddings", options.TextEmbeddings!,
        "--output", options.Output, "--steps", options.Steps.ToString(CultureInfo.InvariantCulture), "--rank", "4", "--lr", "1e-4",
        "--resolution", "64", "--train-img-in", "--export-dtype", "f32", "--device", "cpu",
        "--checkpoint-every", options.CheckpointEvery.ToString(CultureInfo.InvariantCulture), .. extra,
    ];

    private static Dictionary<string, float[]> Lora(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name).Data);
    }

    private static Dictionary<string, float[]> TrainInProcess(TrainOptions options, int batchSize, int accumulate)
    {
        options.BatchSize = batchSize;
        options.Accumulate = accumulate;
        return TrainCommandTests.TrainAndReadLora(options);
    }

    private static double MaxDifference(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        a.Max(p => p.Value.Zip(b[p.Key], (x, y) => Math.Abs((double)x - y)).Max());

    [MpiFact]
    public void TwoRanksTrainTheLoraOfOneProcessOnTheSameGlobalBatches()
    {
        using var dir = new TempDir();
        var options = Options(dir, "two-ranks", steps: 20);
        using (var job = new MpiJob((2, Arguments(options, "--batch-size", "2"))))
        {
            job.WaitForExit(TimeSpan.FromMinutes(5)).ShouldBe(0, job.Output);
            job.Output.ShouldContain("data parallel: 2 ranks share each batch of 2 (1 per rank)");
            job.Output.ShouldContain("examples/s over 2 ranks");
        }
        var twoRanks = Lora(TrainCommand.LoraPath(options));

        // One process's batch of 2 runs both examples in one pass and sums their gradients in another order than the
        // exchange: float rounding only (measured: 6e-8).
        var batched = TrainInProcess(Options(dir, "batched", 20), batchSize: 2, accumulate: 1);
        MaxDifference(twoRanks, batched).ShouldBeLessThanOrEqualTo(1e-6);
        // Not trivially: one example per step trains another LoRA.
        MaxDifference(twoRanks, TrainInProcess(Options(dir, "half", 20), batchSize: 1, accumulate: 1)).ShouldBeGreaterThan(1e-4);
    }

    [MpiFact]
    public void ARankThatDiesEndsTheJobAndItsLastCheckpointResumesInOneProcess()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", steps: 1_000_000);
        options.CheckpointEvery = 3;
        using (var job = new MpiJob((2, Arguments(options, "--batch-size", "2"))))
        {
            job.WaitForLine(l => l.StartsWith("checkpoint: ", StringComparison.Ordinal) && l.Contains("000006", StringComparison.Ordinal), TimeSpan.FromMinutes(3))
                .ShouldBeTrue(job.Output);
            MpiJob.Signal(job.RankProcess(1), "KILL");
            job.WaitForExit(TimeSpan.FromSeconds(30)).ShouldNotBeNull(job.Output).ShouldNotBe(0);
            // Open MPI's launcher names the rank that died.
            job.Output.ShouldContain("rank 1");
        }
        var last = Directory.EnumerateFiles(options.Output, "checkpoint-*.safetensors").Order(StringComparer.Ordinal).Last();
        int step = TrainingCheckpoint.Load(last).Info.Step;
        step.ShouldBeGreaterThanOrEqualTo(6);

        options.Resume = last;
        options.Steps = step + 2;
        options.BatchSize = 2;
        var log = new StringWriter();
        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        log.ToString().ShouldContain($"resumed {last} at step {step}");
        File.Exists(TrainCommand.LoraPath(options)).ShouldBeTrue();
    }

    [MpiFact]
    public void CtrlCToTheLauncherStopsEveryRankAfterOneStepWithACheckpoint()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", steps: 1_000_000);
        options.CheckpointEvery = 1_000_000;
        using var job = new MpiJob((2, Arguments(options, "--batch-size", "2")));
        job.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(3)).ShouldBeTrue(job.Output);
        job.SignalLauncher("INT");
        job.WaitForExit(TimeSpan.FromSeconds(60)).ShouldNotBeNull(job.Output);
        var checkpoint = Directory.EnumerateFiles(options.Output, "checkpoint-*.safetensors").ShouldHaveSingleItem();
        job.Output.ShouldContain($"to continue, run the same command with --resume {checkpoint}");
        TrainingCheckpoint.Load(checkpoint).Info.Step.ShouldBeGreaterThan(0);
    }

    [MpiFact]
    public void ARankThatHangsIsNamedAndEndsTheJob()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", steps: 1_000_000);
        using var job = new MpiJob((2, Arguments(options, "--batch-size", "2", "--rank-timeout", "5")));
        job.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(3)).ShouldBeTrue(job.Output);
        MpiJob.Signal(job.RankProcess(1), "STOP");
        job.WaitForExit(TimeSpan.FromSeconds(60)).ShouldNotBeNull(job.Output).ShouldNotBe(0);
        job.Output.ShouldContain("rank 0 of 2");
        job.Output.ShouldContain("error: rank 1 did not reach the ");
    }

    [MpiFact]
    public void RanksStartedWithOtherOptionsAreRefused()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", steps: 4);
        using var job = new MpiJob((1, Arguments(options, "--batch-size", "2", "--seed", "1")), (1, Arguments(options, "--batch-size", "2", "--seed", "2")));
        job.WaitForExit(TimeSpan.FromMinutes(3)).ShouldNotBeNull(job.Output).ShouldNotBe(0);
        job.Output.ShouldContain("error: rank 1 has other training options than rank 0: start every rank with the same command");
        Directory.EnumerateFiles(options.Output, "*.safetensors").ShouldBeEmpty();
    }

    [MpiFact]
    public void ABatchSmallerThanTheRanksIsRefusedBeforeAnythingRuns()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", steps: 4);
        using var job = new MpiJob((2, Arguments(options, "--batch-size", "1")));
        job.WaitForExit(TimeSpan.FromMinutes(3)).ShouldNotBeNull(job.Output).ShouldNotBe(0);
        job.Output.ShouldContain("--batch-size 1 is the global batch, split over the 2 ranks: give at least 2");
    }

    /// <summary>Ranks of one job in one process: each sees every rank's values as if the others held the same.</summary>
    private sealed class MirroredRanks(int rank, int size) : IProcessGroup
    {
        public int Collectives { get; private set; }
        public int Rank => rank;
        public int Size => size;
        public int LocalRank => rank;
        public string Host => "test";

        public void AllReduceSum(Span<float> values, string what)
        {
            Collectives++;
            foreach (ref float v in values) v *= size;
        }

        public void AllReduceSum(Span<double> values, string what)
        {
            Collectives++;
            foreach (ref double v in values) v *= size;
        }

        public byte[][] AllGather(ReadOnlySpan<byte> mine, string what)
        {
            var copy = mine.ToArray();
            return Enumerable.Repeat(copy, size).ToArray();
        }

        public void Broadcast(Span<byte> buffer, int root, string what) { }
        public void Barrier(string what, bool unbounded = false) { }
        public void Abort(int exitCode) => throw new InvalidOperationException("abort");
        public void Dispose() { }
    }

    [Theory]
    [InlineData(5, 2, new[] { 0, 2, 5 })]
    [InlineData(2, 3, new[] { 0, 0, 1, 2 })]
    [InlineData(7, 3, new[] { 0, 2, 4, 7 })]
    public void SharesSplitABatchIntoContiguousNearEqualParts(int count, int size, int[] bounds)
    {
        for (int rank = 0; rank < size; rank++)
        {
            var share = new MirroredRanks(rank, size).Share(count);
            (share.Start.Value, share.End.Value).ShouldBe((bounds[rank], bounds[rank + 1]));
        }
    }

    [Fact]
    public void GradientsAreSummedInBucketsAndWrittenBackWhole()
    {
        using var backend = new Runtime.Backends.Cpu.CpuBackend();
        var random = new Random(4);
        var parameters = new[] { 5, 3, 9, 2 }.Select((length, i) =>
        {
            var values = new HostTensor(1, length);
            for (int j = 0; j < length; j++) values.Data[j] = (float)random.NextDouble();
            return new TrainableParameter($"p{i}", TensorTransfer.Zeros(backend, [1, length]), backend.Upload(values));
        }).ToList();
        var before = parameters.Select(p => TensorTransfer.Download(backend, p.Gradient).Data).ToList();
        var group = new MirroredRanks(0, 3);
        Span<double> scalars = [1.5];
        // Buckets of at most 8 values: [5, 3], [9] (alone, larger than a bucket), [2].
        group.AllReduceGradients(backend, parameters, scalars, "test", bucketValues: 8);
        group.Collectives.ShouldBe(1 + 3); // the scalars, then three buckets
        scalars[0].ShouldBe(4.5);
        for (int i = 0; i < parameters.Count; i++)
            TensorTransfer.Download(backend, parameters[i].Gradient).Data.ShouldBe(before[i].Select(v => v * 3).ToArray());
        foreach (var p in parameters)
        {
            p.Value.Dispose();
            p.Gradient.Dispose();
        }
    }

    [Fact]
    public void ASingleProcessNeedsNoMpi()
    {
        ProcessGroups.LaunchedByMpi.ShouldBeFalse("the test runner is not started by mpirun");
        var group = ProcessGroups.FromEnvironment(ProcessGroups.DefaultTimeout);
        group.ShouldBeSameAs(SingleProcess.Instance);
        group.Share(3).ShouldBe(new Range(0, 3));
    }
}
