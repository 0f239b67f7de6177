using System.Diagnostics;
using System.Globalization;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Benchmarks;

/// <summary>What to time and at which size; each benchmark reads the fields that concern it.</summary>
public sealed record BenchSettings
{
    /// <summary>A compiled transformer's name.</summary>
    public string Model { get; init; } = "flux-mid";

    /// <summary>A checkpoint to time with; null: seeded random weights.</summary>
    public string? Weights { get; init; }
    public int ImageTokens { get; init; } = 1024;
    public int TextTokens { get; init; } = 128;
    public int Batch { get; init; } = 1;

    /// <summary>How the transformer's weight matrices are held (--base-precision); null: the model's checkpoint dtype.</summary>
    public BasePrecision? BasePrecision { get; init; }

    /// <summary>Timed runs (the median is reported), after <see cref="Warmup"/> untimed ones.</summary>
    public int Runs { get; init; } = 5;
    public int Warmup { get; init; } = 2;

    /// <summary>Also time every op (each waited for).</summary>
    public bool Profile { get; init; }

    /// <summary>The Python with torch for the same-run PyTorch baseline (forward and train); null: no baseline.</summary>
    public string? Python { get; init; } = "/usr/bin/python3";

    /// <summary>The baseline's weights and activations: bf16 where our products run in bf16 (--precision bf16 on CUDA), else fp32.</summary>
    public string BaselineDType { get; init; } = "fp32";

    // Edit:
    public string VaeModel { get; init; } = "flux-vae-tiny";
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    public int Steps { get; init; } = 4;
    public EditMethod Method { get; init; } = EditMethod.Channel;

    /// <summary>
    /// The compiled CLIP and T5 encoders (e.g. clip-l and t5-xxl) whose encoding of one prompt (<see cref="TextTokens"/>
    /// T5 tokens) the edit's time includes, as <c>edit --prompt</c> runs them; null: random text conditioning.
    /// </summary>
    public string? ClipModel { get; init; }
    public string? T5Model { get; init; }

    // Training:
    public int Rank { get; init; } = 16;
    public string Preset { get; init; } = "diffusers";
}

/// <summary>The time per op of one profiled pass and the floating-point work of the ops that count it (products, attention).</summary>
public sealed record OpProfile(IReadOnlyDictionary<string, (double Seconds, int Calls)> Ops, IReadOnlyDictionary<string, double> Operations)
{
    /// <summary>The matrix products: the layers' and, in training, the backward's.</summary>
    public static readonly IReadOnlyList<string> ProductOps = [nameof(CountingBackend.Linear), nameof(CountingBackend.Gemm)];

    /// <summary>Attention, forward and backward.</summary>
    public static readonly IReadOnlyList<string> AttentionOps =
        [nameof(CountingBackend.Attention), nameof(CountingBackend.MaskedAttention), nameof(CountingBackend.AttentionBackward)];

    /// <summary>The products' and attention's achieved rates in this pass.</summary>
    public AchievedRates Achieved => new(RateOf(ProductOps), RateOf(AttentionOps));

    /// <summary>The work of the named ops that ran over their time; null when none of them ran.</summary>
    public AchievedRate? RateOf(IEnumerable<string> ops)
    {
        var ran = ops.Where(Ops.ContainsKey).ToList();
        if (ran.Count == 0) return null;
        return new AchievedRate(ran.Sum(op => Operations.GetValueOrDefault(op)), ran.Sum(op => Ops[op].Seconds));
    }
}

/// <summary>Floating-point operations done in some seconds.</summary>
public sealed record AchievedRate(double Operations, double Seconds)
{
    public double TeraflopsPerSecond => Seconds > 0 ? Operations / Seconds / 1e12 : double.NaN;
}

/// <summary>What a profile says the products and attention achieved; null where the pass had none.</summary>
public sealed record AchievedRates(AchievedRate? Products, AchievedRate? Attention);

/// <summary>One forward's median time, its work, our GEMM rate and, when it ran, PyTorch's on the same weights.</summary>
/// <param name="WeightBytes">What the backend holds for the weights (quantized ones at their stored size).</param>
/// <param name="PeakProcessBytes">The process's peak working set over loading and the runs (everything, not only the backend's count).</param>
/// <param name="PeakDeviceBytes">The weights the device holds plus the backend's peak count over the runs (an offload arena included); null where the backend does not count.</param>
public sealed record ForwardBenchResult(string Model, string Device, int Tokens, double MedianMs, double Flops, double GemmGflops,
    PyTorchBaseline.Result? Baseline, OpProfile? Profile, long WeightBytes = 0, long PeakProcessBytes = 0, long? PeakDeviceBytes = null)
{
    /// <summary>Our time over PyTorch's (below 1: faster), when the baseline ran.</summary>
    public double? Ratio => Baseline?.MedianMs is double ms ? MedianMs / ms : null;
}

/// <summary>Our training step against PyTorch's with the same recomputation, when the baseline ran.</summary>
/// <param name="BaselineError">Why PyTorch's step did not run ("out of memory"), when it did not.</param>
public sealed record TrainStepComparison(string Recompute, double StepMs, long PeakBytes, double? BaselineMs, long? BaselinePeakBytes, string? BaselineError = null)
{
    /// <summary>Our time over PyTorch's (below 1: faster).</summary>
    public double? Ratio => BaselineMs is double ms ? StepMs / ms : null;
}

/// <summary>A whole edit's median seconds per sampling step (the first, which includes the VAE encode, left out) and per image.</summary>
/// <param name="PeakDeviceBytes">As <see cref="ForwardBenchResult.PeakDeviceBytes"/>: the most held in any phase (the text encoders', then the transformer's and VAE's, each with its weights).</param>
/// <param name="SecondsPerImage">The whole edit: the prompt's encoding (<paramref name="TextEncodingSeconds"/>, with text encoders), VAE encode, the steps, decode.</param>
public sealed record EditBenchResult(string Model, string Vae, string Device, int Width, int Height, EditMethod Method, int Steps,
    double SecondsPerStep, double SecondsPerImage, long? PeakDeviceBytes = null, string? TextEncoders = null, double? TextEncodingSeconds = null);

/// <summary>A training step with or without per-block recomputation, and with the block boundaries in host memory.</summary>
/// <param name="PeakBytes">The weights plus the backend's peak, or the process's peak working set where the backend does not count.</param>
public sealed record TrainStepTiming(bool Recompute, double StepMs, long PeakBytes, bool OffloadCheckpoints = false)
{
    /// <summary>The recomputation column: "no", "per block", or "per block, host" (--offload-checkpoints).</summary>
    public string Label => (Recompute ? "per block" : "no") + (OffloadCheckpoints ? ", host" : "");
}

/// <summary>A LoRA training step against a forward of the same model and tokens.</summary>
/// <param name="PeakCountedByBackend">Whether the peaks are the backend's count (else the process's peak working set, which never goes down).</param>
public sealed record TrainBenchResult(string Model, string Device, string Adapters, double ForwardMs, IReadOnlyList<TrainStepTiming> Steps,
    bool PeakCountedByBackend, long WeightBytes, long ProcessBytesAfterForward, OpProfile? Profile, double? StepGflop, double? ForwardGflop,
    PyTorchBaseline.Result? Baseline = null)
{
    /// <summary>Each of our steps beside the baseline's with the same recomputation (PyTorch's figures null where it did not run).</summary>
    public IReadOnlyList<TrainStepComparison> Comparison => Steps.Select(step =>
    {
        var theirs = Baseline?.TrainSteps?.FirstOrDefault(s => s.Recompute == step.Recompute);
        return new TrainStepComparison(step.Label, step.StepMs, step.PeakBytes, theirs?.MedianMs, theirs?.PeakBytes, theirs?.Error);
    }).ToList();
}

/// <summary>Timings of the compiled models with seeded random weights (or a checkpoint): forward, whole edit, training step.</summary>
public static partial class Benchmarks
{
    internal const int Seed = 1234;

    public static CompiledModelInfo Compiled(string name) =>
        ModelCatalog.All.FirstOrDefault(m => m.Descriptor.Name == name)
        ?? throw new ArgumentException($"no compiled model '{name}' (compiled: {string.Join(", ", ModelCatalog.All.Select(m => m.Descriptor.Name))})");

    /// <summary>One transformer forward (median after warm-up) and, when <see cref="BenchSettings.Python"/> is set, PyTorch's on the same device in the same run.</summary>
    public static ForwardBenchResult Forward(BenchSettings settings, IBackend device, TextWriter? log = null, IProgress<StageProgress>? progress = null)
    {
        log ??= TextWriter.Null;
        var info = Compiled(settings.Model);
        var backend = new CountingBackend(device);
        var weights = settings.Weights == null
            ? RandomWeights.Upload(info.Descriptor, backend, Seed, StageProgress.Of(progress, "random weights", "tensors"), settings.BasePrecision)
            : LoadWeights(info, settings.Weights, backend, progress, settings.BasePrecision);
        long weightBytes = weights.Values.Sum(w => w.StoredBytes);
        var statistics = device as IMemoryStatistics;
        double medianMs, flops;
        long? peakAllocated;
        OpProfile? profile = null;
        try
        {
            var model = info.Create(backend, weights);
            var inputs = BenchInputs.Create(info.Descriptor, settings.Batch, settings.ImageTokens, settings.TextTokens)
                .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
            try
            {
                var runs = StageProgress.Of(progress, "forward", "runs");
                int run = 0;
                statistics?.ResetPeak();
                medianMs = Median(settings, () =>
                {
                    backend.ResetCount();
                    foreach (var output in model.Run(inputs).Values) output.Dispose();
                    backend.Synchronize();
                    runs?.Report((++run, settings.Warmup + settings.Runs));
                });
                flops = backend.FloatingPointOperations;
                peakAllocated = statistics?.PeakAllocatedBytes;
                if (settings.Profile)
                {
                    // A second instance on a profiling wrapper after the timed runs: they stay unprofiled, so the ratio
                    // to PyTorch compares whole passes, not passes that waited for every op.
                    var profiling = new CountingBackend(device, profile: true);
                    var profiled = info.Create(profiling, weights);
                    for (int pass = 0; pass < 2; pass++)
                    {
                        profiling.ResetCount();
                        foreach (var output in profiled.Run(inputs).Values) output.Dispose();
                        profiling.Synchronize();
                    }
                    profile = new OpProfile(new Dictionary<string, (double Seconds, int Calls)>(profiling.Profile),
                        new Dictionary<string, double>(profiling.OperationsByOp));
                }
            }
            finally
            {
                foreach (var t in inputs.Values) t.Dispose();
            }
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
        long peakProcessBytes = Process.GetCurrentProcess().PeakWorkingSet64;
        long? peakDeviceBytes = weightBytes + peakAllocated;
        double gemm = MeasureGemm(backend, 1024);
        var baseline = RunBaseline(settings, info.Descriptor, device, train: false, log);
        return new ForwardBenchResult(info.Descriptor.Name, backend.Name, settings.Batch * (settings.ImageTokens + settings.TextTokens),
            medianMs, flops, gemm, baseline, profile, weightBytes, peakProcessBytes, peakDeviceBytes);
    }

    /// <summary>A whole edit with seeded random weights: seconds per sampling step and per image.</summary>
    public static EditBenchResult Edit(BenchSettings settings, IBackend backend, IProgress<StageProgress>? progress = null)
    {
        var transformerInfo = Compiled(settings.Model);
        var vaeInfo = Compiled(settings.VaeModel);
        // As edit --prompt does: the encoders run and are released before the transformer's weights exist.
        var random = new Random(3);
        var (text, encoders) = settings.ClipModel is null && settings.T5Model is null
            ? (new TextConditioning(RandomTensor(random, 1, settings.TextTokens, TextConditioning.IntParam(transformerInfo.Descriptor, "context_in_dim")),
                RandomTensor(random, 1, TextConditioning.IntParam(transformerInfo.Descriptor, "vec_in_dim"))), null)
            : EncodeRandomPrompt(settings, backend, progress);
        text.Validate(transformerInfo.Descriptor, $"bench edit's text encoders ({settings.ClipModel}, {settings.T5Model})");
        var transformerWeights = RandomWeights.Upload(transformerInfo.Descriptor, backend, Seed, StageProgress.Of(progress, "random transformer weights", "tensors"),
            settings.BasePrecision);
        var vaeWeights = RandomWeights.Upload(vaeInfo.Descriptor, backend, Seed, StageProgress.Of(progress, "random vae weights", "tensors"));
        try
        {
            var pipeline = new FillPipeline(transformerInfo.Create(backend, transformerWeights), vaeInfo.Create(backend, vaeWeights));
            var request = new FillEditRequest(RandomTensor(random, 1, 3, settings.Height, settings.Width),
                settings.Method == EditMethod.Fill ? new HostTensor(1, 1, settings.Height, settings.Width) : null,
                settings.Method, text, settings.Steps, Seed: 1);

            var statistics = backend as IMemoryStatistics;
            statistics?.ResetPeak();
            // The first step's time includes the VAE encode; the median over steps leaves it out.
            var stepTimes = new List<double>();
            var whole = Stopwatch.StartNew();
            pipeline.Edit(request, new StepTimer(stepTimes));
            double total = whole.Elapsed.TotalSeconds + (encoders?.Seconds ?? 0);
            stepTimes.Sort();
            double perStep = stepTimes.Count == 0 ? double.NaN : stepTimes[stepTimes.Count / 2];
            return new EditBenchResult(transformerInfo.Descriptor.Name, vaeInfo.Descriptor.Name, backend.Name, settings.Width, settings.Height,
                settings.Method, settings.Steps, perStep, total,
                MaxOf(transformerWeights.Values.Concat(vaeWeights.Values).Sum(w => w.StoredBytes) + statistics?.PeakAllocatedBytes, encoders?.PeakDeviceBytes),
                encoders?.Names, encoders?.Seconds);
        }
        finally
        {
            foreach (var w in transformerWeights.Values.Concat(vaeWeights.Values)) w.Dispose();
        }
    }

    /// <summary>
    /// A LoRA training step (forward, backward, AdamW), keeping every activation and with per-block recomputation,
    /// against one plain forward of the same model and tokens, in the same run, with the peak memory of each.
    /// </summary>
    public static TrainBenchResult Train(BenchSettings settings, IBackend backend, IProgress<StageProgress>? progress = null, TextWriter? log = null)
    {
        TrainBenchResult result;
        using (var rig = new LoraBenchRig(settings, backend, Seed, progress)) result = Train(settings, backend, rig);
        // After the rig is gone: on a GPU the baseline needs the memory our weights and activations held.
        return result with { Baseline = RunBaseline(settings, Compiled(settings.Model).Descriptor, backend, train: true, log ?? TextWriter.Null) };
    }

    private static TrainBenchResult Train(BenchSettings settings, IBackend backend, LoraBenchRig rig)
    {
        var (info, model, inputs, state) = (rig.Info, rig.Model, rig.Inputs, rig.State);
        double forward = Median(settings, () =>
        {
            foreach (var output in model.Run(inputs).Values) output.Dispose();
            backend.Synchronize();
        });
        long forwardMemory = Environment.WorkingSet;
        model.Training = state;
        var statistics = backend as IMemoryStatistics;
        long weightBytes = rig.Weights.Values.Sum(w => w.StoredBytes);
        var steps = new List<TrainStepTiming>();
        // Block boundaries in host memory only mean something where tensors live on a device.
        var modes = backend is Runtime.Backends.Gpu.IlgpuBackend ? new[] { (false, false), (true, false), (true, true) } : new[] { (false, false), (true, false) };
        foreach (var (recompute, offloadCheckpoints) in modes)
        {
            state.Recompute = recompute;
            state.OffloadCheckpoints = offloadCheckpoints;
            statistics?.ResetPeak();
            double step = Median(settings, () => rig.Step());
            // The weights plus the most the backend held during the steps (activations, gradients, adapters, scratch).
            long peak = statistics != null
                ? weightBytes + statistics.PeakAllocatedBytes
                : Process.GetCurrentProcess().PeakWorkingSet64;
            steps.Add(new TrainStepTiming(recompute, step, peak, offloadCheckpoints));
        }
        OpProfile? profile = null;
        double? stepGflop = null, forwardGflop = null;
        if (settings.Profile)
        {
            // A second instance of the model on a counting wrapper: the timed rows above stay unprofiled.
            var counting = new CountingBackend(backend, profile: true);
            var profiled = info.Create(counting, rig.Weights);
            profiled.Training = state;
            (state.Recompute, state.OffloadCheckpoints) = (false, false);
            counting.ResetCount();
            foreach (var output in profiled.Run(inputs).Values) output.Dispose();
            forwardGflop = counting.FloatingPointOperations / 1e9;
            for (int pass = 0; pass < 2; pass++)
            {
                counting.ResetCount();
                profiled.ForwardBackward(inputs, output => counting.Upload(new HostTensor(output.Shape)));
            }
            profile = new OpProfile(new Dictionary<string, (double Seconds, int Calls)>(counting.Profile), new Dictionary<string, double>(counting.OperationsByOp));
            stepGflop = counting.FloatingPointOperations / 1e9;
        }
        return new TrainBenchResult(info.Descriptor.Name, backend.Name, $"{rig.Targets.Count} × rank {settings.Rank} ({settings.Preset})", forward, steps,
            statistics != null, weightBytes, forwardMemory, profile, stepGflop, forwardGflop);
    }

    /// <summary>The median milliseconds of <see cref="BenchSettings.Runs"/> runs after <see cref="BenchSettings.Warmup"/> untimed ones.</summary>
    internal static double Median(BenchSettings settings, Action run)
    {
        var times = new List<double>();
        for (int i = 0; i < settings.Warmup + settings.Runs; i++)
        {
            var clock = Stopwatch.StartNew();
            run();
            if (i >= settings.Warmup) times.Add(clock.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Times each sampling step from the sampler's progress reports (the first report ends step one).</summary>
    private sealed class StepTimer(List<double> times) : IProgress<(int Done, int Total)>
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();

        public void Report((int Done, int Total) value)
        {
            times.Add(_clock.Elapsed.TotalSeconds);
            _clock.Restart();
        }
    }

    private static IReadOnlyDictionary<string, DeviceTensor> LoadWeights(CompiledModelInfo info, string path, IBackend backend, IProgress<StageProgress>? progress,
        BasePrecision? precision)
    {
        using var file = Runtime.WeightFiles.WeightFile.Open(path);
        return WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend, StageProgress.Of(progress, "loading weights", "tensors"),
            ignored: info.Descriptor.Ignores, precision: precision ?? BasePrecision.Keep, canonicalKey: info.Descriptor.CanonicalKey);
    }

    /// <summary>
    /// PyTorch's forward or training step on the same device, in the settings' baseline dtype, on the same weights: the
    /// checkpoint when one is timed, else a manifest from which the script regenerates our seeded random weights (and
    /// with which it puts the same adapters on for training). Null when no Python is set.
    /// </summary>
    private static PyTorchBaseline.Result? RunBaseline(BenchSettings settings, ModelDescriptor model, IBackend device, bool train, TextWriter log)
    {
        if (settings.Python == null) return null;
        // Our pool's cached buffers would otherwise stay reserved on the GPU while PyTorch needs it whole.
        device.ReleaseCachedMemory();
        string[] weights;
        if (settings.Weights != null && !train) weights = ["--weights", settings.Weights];
        else
        {
            if (settings.Weights != null) log.WriteLine("the PyTorch training baseline runs on the seeded random weights (its manifest names the adapters), not --weights");
            string manifest = Path.Combine(Path.GetTempPath(), $"influx-bench-{model.Name}-{Seed}-{settings.Preset}-r{settings.Rank}.json");
            RandomWeights.WriteManifest(model, manifest, Seed, train ? LoraTargets.Preset(settings.Preset, model) : [], settings.Rank, LoraBenchRig.Scale);
            weights = ["--random-weights", manifest];
        }
        string deviceName = device.Name == "cuda" ? "cuda" : "cpu";
        return PyTorchBaseline.Run(new PyTorchBaseline.Request(settings.Python, deviceName, settings.BaselineDType, weights,
            settings.ImageTokens, settings.TextTokens, settings.Batch, settings.Runs, settings.Warmup, train), log);
    }

    /// <summary>Our own GEMM rate through the backend's Linear, for comparison with the machine's BLAS.</summary>
    private static double MeasureGemm(IBackend backend, int n)
    {
        var random = new Random(7);
        var host = new HostTensor(n, n);
        for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)(random.NextDouble() - 0.5);
        using var x = backend.Upload(host);
        using var w = backend.Upload(host);
        using var y = backend.Allocate(new[] { n, n });
        var times = new List<double>();
        for (int run = 0; run < 6; run++)
        {
            var clock = Stopwatch.StartNew();
            backend.Linear(y, x, w, null);
            backend.Synchronize();
            if (run > 0) times.Add(clock.Elapsed.TotalSeconds);
        }
        times.Sort();
        return 2.0 * n * n * n / times[times.Count / 2] / 1e9;
    }
}
