using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Training;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// Training on batches: one generated ForwardBackward over N examples of a bucket gives the gradients of accumulating
/// the same N examples one by one (the generated code reads the batch size off its inputs), batches never mix
/// buckets, and a run with batches resumes exactly.
/// </summary>
public class BatchGradientTests
{
    /// <summary>
    /// Pairs made from the golden pair: three landscape ones (the pair, reversed, the target twice) and two portrait
    /// crops, which fall in another aspect bucket.
    /// </summary>
    internal static string Pairs(TempDir dir)
    {
        string data = dir.File("pairs");
        Directory.CreateDirectory(Path.Combine(data, "source"));
        Directory.CreateDirectory(Path.Combine(data, "target"));
        var a = ImageFile.LoadRgb(TestPaths.Golden("methods-tiny-source.png"));
        var b = ImageFile.LoadRgb(TestPaths.Golden("methods-tiny-target.png"));
        void Write(string name, HostTensor source, HostTensor target)
        {
            ImageFile.SaveRgb(source, Path.Combine(data, "source", name + ".png"));
            ImageFile.SaveRgb(target, Path.Combine(data, "target", name + ".png"));
            File.WriteAllText(Path.Combine(data, "source", name + ".txt"), "edit " + name);
        }
        Write("forward", a, b);
        Write("backward", b, a);
        Write("forward-again", b, b);
        // 64 × 48 → 32 × 48: a 2:3 portrait, another bucket than the 4:3 landscape pairs.
        Write("portrait-left", ImageSizing.Crop(a, 0, 0, 48, 32), ImageSizing.Crop(b, 0, 0, 48, 32));
        Write("portrait-right", ImageSizing.Crop(b, 0, 32, 48, 32), ImageSizing.Crop(a, 0, 32, 48, 32));
        return data;
    }

    private static Dictionary<string, float[]> TrainedLora(TempDir dir, string output, int batchSize, int accumulate, int steps)
    {
        var options = TrainCommandTests.Options(dir, output, EditMethod.Channel, steps);
        options.Data = Pairs(dir);
        options.BatchSize = batchSize;
        options.Accumulate = accumulate;
        var log = new StringWriter();
        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        using var file = SafeTensorsFile.Open(TrainCommand.LoraPath(options));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name).Data);
    }

    /// <summary>
    /// One step's gradients of a FillTrainer on the tiny golden model over three examples of one bucket (their own
    /// latents, conditioning and text), with the same random up-projections in every run.
    /// </summary>
    private sealed class TinyTrainerRun : IDisposable
    {
        private readonly CpuBackend _backend = new();
        private readonly CompiledModelInfo _info = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");
        private readonly IReadOnlyDictionary<string, DeviceTensor> _weights;
        private readonly List<FillTrainer.Example> _examples;

        public TinyTrainerRun()
        {
            using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
            _weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, new[] { file }, _backend);
            var random = new Random(11);
            HostTensor Random(params int[] shape)
            {
                var t = new HostTensor(shape);
                for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() * 2 - 1);
                return t;
            }
            var ids = BenchInputs.Create(_info.Descriptor, 1, imageTokens: 12, textTokens: 5)["img_ids"];
            _examples = Enumerable.Range(0, 3).Select(i => new FillTrainer.Example($"example-{i}", Random(1, 12, 320), ids, Random(1, 12, 64),
                Enumerable.Repeat(1f, 12).ToArray(), new TextConditioning(Random(1, 5, 48), Random(1, 32)))).ToList();
        }

        public Dictionary<string, double[]> StepGradients(int batchSize, int accumulate, LossWeighting weighting = LossWeighting.None)
        {
            // img_in trained in full too: its gradient sums over the batch's rows like the adapters'.
            var settings = new TrainingSettings(EditMethod.Channel, Steps: 4, Rank: 4, Alpha: 4, Preset: "diffusers", TrainImgIn: true,
                new OptimizerSettings(), LearningRate: 1e-3, ScheduleKind.Constant, WarmupSteps: 0, TimestepSampling.Uniform, Guidance: 1,
                accumulate, MaxGradientNorm: 1, Seed: 5, CheckpointEvery: 4, LoraFormat.Kohya, LossRegion.All)
            { BatchSize = batchSize, LossWeighting = weighting };
            using var trainer = new FillTrainer(_info.Create(_backend, _weights), _weights, settings, [_examples]);
            // Up-projections start at zero, which leaves the down-projections no gradient.
            var upRandom = new Random(3);
            foreach (var up in trainer.Parameters.Where(p => p.Name.EndsWith(LoraModule.UpSuffix, StringComparison.Ordinal)))
            {
                var values = new HostTensor(up.Value.Shape);
                for (int i = 0; i < values.Data.Length; i++) values.Data[i] = (float)(upRandom.NextDouble() - 0.5);
                TensorTransfer.Overwrite(_backend, up.Value, values);
            }
            trainer.ComputeGradients();
            return trainer.Parameters.ToDictionary(p => p.Name, p => _backend.Download(p.Gradient, p.Gradient.Shape).Data.Select(v => (double)v).ToArray());
        }

        public void Dispose()
        {
            foreach (var w in _weights.Values) w.Dispose();
            _backend.Dispose();
        }
    }

    [Fact]
    public void ATrainersBatchGivesTheGradientsOfAccumulatingTheSameExamples()
    {
        using var run = new TinyTrainerRun();
        var batched = run.StepGradients(batchSize: 3, accumulate: 1);
        var accumulated = run.StepGradients(batchSize: 1, accumulate: 3);
        var single = run.StepGradients(batchSize: 1, accumulate: 1);
        foreach (var (name, expected) in accumulated)
        {
            expected.ShouldContain(v => v != 0, $"{name}: an all-zero gradient would prove nothing");
            double scale = expected.Max(Math.Abs);
            for (int i = 0; i < expected.Length; i++) batched[name][i].ShouldBe(expected[i], 1e-5 * scale, $"{name}[{i}]");
        }
        // Not trivially: one example per step gives other gradients.
        single.ShouldContain(p => p.Value.Where((v, i) => Math.Abs(v - accumulated[p.Key][i]) > 1e-2 * accumulated[p.Key].Max(Math.Abs)).Any());
    }

    [Fact]
    public void SigmaSqrtWeightingScalesAnExamplesGradientsByOneOverSigmaSquared()
    {
        using var run = new TinyTrainerRun();
        var plain = run.StepGradients(batchSize: 1, accumulate: 1);
        var weighted = run.StepGradients(batchSize: 1, accumulate: 1, LossWeighting.SigmaSqrt);
        // One example and the same draws: every gradient is scaled by one factor, 1/σ² for a σ on the training grid k/1000.
        // The adapters' gradients: img_in's are long float32 sums with cancellation, a few 1e-4 off a pure scaling.
        var adapters = plain.Where(p => p.Key.Contains(".lora_", StringComparison.Ordinal)).ToList();
        var ratios = adapters.SelectMany(p => p.Value.Select((v, i) => (v, w: weighted[p.Key][i])))
            .Where(x => Math.Abs(x.v) > 1e-3 * adapters.Max(g => g.Value.Max(Math.Abs))).Select(x => x.w / x.v).ToList();
        ratios.Count.ShouldBeGreaterThan(100);
        double ratio = ratios.Average();
        ratios.ShouldAllBe(r => Math.Abs(r - ratio) < 1e-4 * ratio);
        double sigma = 1 / Math.Sqrt(ratio);
        (sigma * 1000).ShouldBe(Math.Round(sigma * 1000), 1e-3);
        ratio.ShouldBeGreaterThan(1.0);
    }

    [Fact]
    public void BatchesKeepToOneBucketAndResumeExactly()
    {
        using var dir = new TempDir();
        // Landscape and portrait pairs: a batch that mixed them could not be stacked (the trainer refuses).
        var whole = TrainedLora(dir, "whole", batchSize: 2, accumulate: 2, steps: 4);
        var options = TrainCommandTests.Options(dir, "split", EditMethod.Channel, 2);
        options.Data = dir.File("pairs");
        options.BatchSize = 2;
        options.Accumulate = 2;
        TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        options.Steps = 4;
        options.Resume = dir.File("split/checkpoint-000002.safetensors");
        TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        using var split = SafeTensorsFile.Open(TrainCommand.LoraPath(options));
        foreach (var (name, expected) in whole) split.ReadFloat32(name).Data.ShouldBe(expected, name);

        options.BatchSize = 3;
        Should.Throw<InvalidDataException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message.ShouldContain("--batch-size 2");
    }
}
