using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("bench", HelpText = "Benchmarks. 'bench forward' times one transformer forward pass (median after warm-up) and, when available, the same model in PyTorch on the CPU in the same run. 'bench edit' times a whole edit (VAE encode, sampling steps, decode) at a given image size. 'bench train' times a LoRA training step, keeping every activation and recomputing each block's, against a forward pass of the same model, with the peak memory of each.")]
public sealed class BenchOptions : DeviceOptions
{
    [Value(0, MetaName = "WHAT", Required = true, HelpText = "What to time: forward, edit or train.")]
    public string What { get; set; } = "";

    [Option("model", Default = "flux-mid", HelpText = "A compiled model's name (see 'influx-cli models').")]
    public string Model { get; set; } = "flux-mid";

    [Option("weights", HelpText = "A checkpoint to time with; by default seeded random weights.")]
    public string? Weights { get; set; }

    [Option("tokens", Default = 1024, HelpText = "Image tokens (a 512x512 image packs to 1024, 1024x1024 to 4096).")]
    public int ImageTokens { get; set; } = 1024;

    [Option("txt-tokens", Default = 128, HelpText = "Text tokens (FLUX Fill uses 128 or 512).")]
    public int TextTokens { get; set; } = 128;

    [Option("batch", Default = 1, HelpText = "Batch size.")]
    public int Batch { get; set; } = 1;

    [Option("runs", Default = 5, HelpText = "Timed runs (the median is reported).")]
    public int Runs { get; set; } = 5;

    [Option("warmup", Default = 2, HelpText = "Untimed runs first.")]
    public int Warmup { get; set; } = 2;

    [Option("baseline", Default = "auto", HelpText = "PyTorch CPU baseline: auto (run it when installed), pytorch (require it), none.")]
    public string Baseline { get; set; } = "auto";

    [Option("vae-model", Default = "flux-vae-tiny", HelpText = "bench edit: the compiled VAE (flux-vae for the real one).")]
    public string VaeModel { get; set; } = "flux-vae-tiny";

    [Option("width", Default = 512, HelpText = "bench edit: image width in pixels.")]
    public int Width { get; set; } = 512;

    [Option("height", Default = 512, HelpText = "bench edit: image height in pixels.")]
    public int Height { get; set; } = 512;

    [Option("steps", Default = 4, HelpText = "bench edit: sampling steps.")]
    public int Steps { get; set; } = 4;

    [Option("method", Default = EditMethod.Channel, HelpText = "bench edit: fill, channel or concat (concat samples a diptych twice as wide).")]
    public EditMethod Method { get; set; } = EditMethod.Channel;

    [Option("rank", Default = 16, HelpText = "bench train: LoRA rank.")]
    public int Rank { get; set; } = 16;

    [Option("preset", Default = "diffusers", HelpText = "bench train: a LoRA preset of the model's schema (FLUX: diffusers or kohya).")]
    public string Preset { get; set; } = "diffusers";

    [Option("profile", HelpText = "Also print the time per op of a forward (bench forward) or of a forward and backward pass without recomputation (bench train); it waits for every op, so the total is slower than an unprofiled run.")]
    public bool Profile { get; set; }

    [Option("python", Default = "/usr/bin/python3", HelpText = "The Python that has torch (bench/install-pytorch-baseline.sh installs Debian's).")]
    public string Python { get; set; } = "/usr/bin/python3";
}

public static class BenchCommand
{
    public static int Run(BenchOptions options)
    {
        if (options.What == "edit") return TimeEdit(options);
        if (options.What == "train") return TimeTraining(options);
        if (options.What != "forward")
            throw new ArgumentException($"unknown benchmark '{options.What}': this build has 'forward', 'edit' and 'train'");
        var info = Compiled(options.Model);

        using var inner = options.CreateBackend(System.Console.Out);
        var backend = new CountingBackend(inner, options.Profile);
        var weights = options.Weights == null
            ? RandomWeights.Upload(info.Descriptor, backend, Seed, new ProgressBar("random weights", "tensors"))
            : LoadWeights(info, options.Weights, backend);
        var result = TimeForward(backend, info, weights, options);
        double gemm = MeasureGemm(backend, 1024);

        var table = new ConsoleTable("implementation", "device", "median ms", "tokens/s", "GFLOP/s", "vs PyTorch");
        double? baselineMs = null;
        string? baselineNote = null;
        if (options.Baseline != "none")
        {
            var baseline = PyTorchBaseline.Run(options, options.Weights ?? BaselineWeightsFile(info.Descriptor));
            if (baseline.Error != null)
            {
                if (options.Baseline == "pytorch") throw new InvalidOperationException(baseline.Error);
                baselineNote = baseline.Error;
            }
            else baselineMs = baseline.MedianMs;
            if (baseline.GemmGflops is double blas) System.Console.WriteLine($"BLAS float32 1024³ GEMM (PyTorch, same run): {blas:F1} GFLOP/s");
        }
        System.Console.WriteLine($"our float32 1024³ GEMM on {backend.Name}: {gemm:F1} GFLOP/s");

        int tokens = options.Batch * (options.ImageTokens + options.TextTokens);
        string ratio = baselineMs is double b ? (result.MedianMs / b).ToString("F2", CultureInfo.InvariantCulture) + "x time" : "-";
        table.Add("influx-cli (" + info.Descriptor.Name + ")", backend.Name, result.MedianMs.ToString("F1", CultureInfo.InvariantCulture),
            (tokens / (result.MedianMs / 1000)).ToString("F0", CultureInfo.InvariantCulture),
            (result.Flops / (result.MedianMs / 1000) / 1e9).ToString("F1", CultureInfo.InvariantCulture), ratio);
        if (baselineMs is double ms)
            table.Add("PyTorch " + "(CPU, float32)", "cpu", ms.ToString("F1", CultureInfo.InvariantCulture),
                (tokens / (ms / 1000)).ToString("F0", CultureInfo.InvariantCulture),
                (result.Flops / (ms / 1000) / 1e9).ToString("F1", CultureInfo.InvariantCulture), "1.00x");
        System.Console.WriteLine($"forward of {info.Descriptor.Name}: batch {options.Batch}, {options.ImageTokens} image + {options.TextTokens} text tokens, " +
                                 $"{result.Flops / 1e9:F1} GFLOP per pass, median of {options.Runs} after {options.Warmup} warm-up");
        table.Write(System.Console.Out);
        if (options.Profile) WriteProfile(result.Profile);
        if (baselineNote != null) System.Console.WriteLine($"PyTorch baseline not run: {baselineNote}");
        return 0;
    }

    private static CompiledModelInfo Compiled(string name) =>
        ModelCatalog.All.FirstOrDefault(m => m.Descriptor.Name == name)
        ?? throw new ArgumentException($"no compiled model '{name}' (compiled: {string.Join(", ", ModelCatalog.All.Select(m => m.Descriptor.Name))})");

    /// <summary>A whole edit with seeded random weights: seconds per sampling step and per image.</summary>
    private static int TimeEdit(BenchOptions options)
    {
        var transformerInfo = Compiled(options.Model);
        var vaeInfo = Compiled(options.VaeModel);
        using var backend = options.CreateBackend(System.Console.Out);
        var transformerWeights = RandomWeights.Upload(transformerInfo.Descriptor, backend, Seed, new ProgressBar("random transformer weights", "tensors"));
        var vaeWeights = RandomWeights.Upload(vaeInfo.Descriptor, backend, Seed, new ProgressBar("random vae weights", "tensors"));
        try
        {
            var pipeline = new FillPipeline(transformerInfo.Create(backend, transformerWeights), vaeInfo.Create(backend, vaeWeights));
            int Param(string name) => int.Parse(transformerInfo.Descriptor.Params[name], CultureInfo.InvariantCulture);
            var random = new Random(3);
            HostTensor Random(params int[] shape)
            {
                var t = new HostTensor(shape);
                for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() * 2 - 1);
                return t;
            }
            var request = new FillEditRequest(Random(1, 3, options.Height, options.Width),
                options.Method == EditMethod.Fill ? new HostTensor(1, 1, options.Height, options.Width) : null,
                options.Method, new TextConditioning(Random(1, 128, Param("context_in_dim")), Random(1, Param("vec_in_dim"))),
                options.Steps, Seed: 1);

            // The first step's time includes the VAE encode; the median over steps leaves it out.
            var stepTimes = new List<double>();
            var whole = Stopwatch.StartNew();
            pipeline.Edit(request, new StepTimer(stepTimes));
            double total = whole.Elapsed.TotalSeconds;
            stepTimes.Sort();
            double perStep = stepTimes.Count == 0 ? double.NaN : stepTimes[stepTimes.Count / 2];
            var table = new ConsoleTable("model", "vae", "device", "size", "method", "s per step (median)", "s per image", "steps");
            table.Add(transformerInfo.Descriptor.Name, vaeInfo.Descriptor.Name, backend.Name, $"{options.Width}×{options.Height}",
                options.Method.ToString().ToLowerInvariant(), perStep.ToString("F3", CultureInfo.InvariantCulture),
                total.ToString("F2", CultureInfo.InvariantCulture), options.Steps.ToString(CultureInfo.InvariantCulture));
            table.Write(System.Console.Out);
            return 0;
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
    private static int TimeTraining(BenchOptions options)
    {
        var info = Compiled(options.Model);
        using var backend = options.CreateBackend(System.Console.Out);
        var training = backend as ITrainingBackend
            ?? throw new NotSupportedException($"the {backend.Name} backend has no training ops: bench train runs with --device cpu or --device cuda");
        var weights = RandomWeights.Upload(info.Descriptor, backend, Seed, new ProgressBar("random weights", "tensors"));
        try
        {
            var model = info.Create(backend, weights);
            var inputs = BenchInputs.Create(info.Descriptor, options.Batch, options.ImageTokens, options.TextTokens)
                .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
            var targets = LoraTargets.Preset(options.Preset, info.Descriptor);
            var parameters = LoraInit.Create(backend, targets, options.Rank, LoraInit.KindOf(options.Preset, info.Descriptor), new TrainingRandom(Seed));
            var state = LoraInit.Attach(targets, parameters, scale: 1f);
            using var optimizer = new AdamW(training);
            try
            {
                double forward = Median(options, () =>
                {
                    foreach (var output in model.Run(inputs).Values) output.Dispose();
                    backend.Synchronize();
                });
                long forwardMemory = Environment.WorkingSet;
                model.Training = state;
                var statistics = backend as IMemoryStatistics;
                long weightBytes = weights.Values.Sum(w => w.Length * w.DType.SizeInBytes());
                var table = new ConsoleTable("model", "device", "tokens", "adapters", "recompute", "forward ms", "s per train step", "step / forward",
                    statistics != null ? "peak memory" : "peak process memory");
                var results = new List<(double Step, long Peak)>();
                foreach (bool recompute in new[] { false, true })
                {
                    state.Recompute = recompute;
                    statistics?.ResetPeak();
                    double step = Median(options, () =>
                    {
                        foreach (var p in parameters) training.Scale(p.Gradient, 0f);
                        model.ForwardBackward(inputs, output => backend.Upload(new HostTensor(output.Shape)));
                        optimizer.Step(parameters, AdamW.DefaultLearningRate);
                        // Each step waits for the device, so the median times whole steps, not their queueing.
                        backend.Synchronize();
                    });
                    // The weights plus the most the backend held during the steps (activations, gradients, adapters, scratch).
                    long peak = statistics != null
                        ? weightBytes + statistics.PeakAllocatedBytes
                        : System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64;
                    results.Add((step, peak));
                    table.Add(info.Descriptor.Name, backend.Name, $"{options.ImageTokens}+{options.TextTokens}", $"{targets.Count} × rank {options.Rank} ({options.Preset})",
                        recompute ? "per block" : "no", forward.ToString("F1", CultureInfo.InvariantCulture), (step / 1000).ToString("F3", CultureInfo.InvariantCulture),
                        (step / forward).ToString("F2", CultureInfo.InvariantCulture) + "×", TrainingProgress.FormatBytes(peak));
                }
                table.Write(System.Console.Out);
                System.Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"recomputing: {results[1].Step / results[0].Step:F2}× the step time, {(double)results[1].Peak / results[0].Peak:F2}× the peak memory " +
                    $"({(statistics != null ? $"{TrainingProgress.FormatBytes(weightBytes)} of weights plus the backend's peak count" : "the process's peak working set, which never goes down: read the first row's")}; " +
                    $"the process held {TrainingProgress.FormatBytes(forwardMemory)} after the forward runs)"));
                if (options.Profile)
                {
                    // A second instance of the model on a counting wrapper: the timed rows above stay unprofiled.
                    var counting = new CountingBackend(backend, profile: true);
                    var profiled = info.Create(counting, weights);
                    profiled.Training = state;
                    state.Recompute = false;
                    counting.ResetCount();
                    foreach (var output in profiled.Run(inputs).Values) output.Dispose();
                    double forwardFlops = counting.FloatingPointOperations;
                    for (int pass = 0; pass < 2; pass++)
                    {
                        counting.ResetCount();
                        profiled.ForwardBackward(inputs, output => counting.Upload(new HostTensor(output.Shape)));
                    }
                    WriteProfile(counting.Profile);
                    // The products' work sets a floor under the time ratio: attention's backward alone has 5 products to the forward's 2.
                    System.Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"work: {counting.FloatingPointOperations / 1e9:F1} GFLOP per step, {forwardFlops / 1e9:F1} per forward: {counting.FloatingPointOperations / forwardFlops:F2}× in products alone"));
                }
                return 0;
            }
            finally
            {
                model.Training = null;
                foreach (var p in parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
                foreach (var t in inputs.Values) t.Dispose();
            }
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }

    private static double Median(BenchOptions options, Action run)
    {
        var times = new List<double>();
        for (int i = 0; i < options.Warmup + options.Runs; i++)
        {
            var clock = Stopwatch.StartNew();
            run();
            if (i >= options.Warmup) times.Add(clock.Elapsed.TotalMilliseconds);
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

    private sealed record ForwardTiming(double MedianMs, double Flops, IReadOnlyDictionary<string, (double Seconds, int Calls)> Profile);

    private static void WriteProfile(IReadOnlyDictionary<string, (double Seconds, int Calls)> profile)
    {
        double total = profile.Values.Sum(p => p.Seconds);
        var table = new ConsoleTable("op", "calls", "ms per pass", "share");
        foreach (var (op, (seconds, calls)) in profile.OrderByDescending(p => p.Value.Seconds))
            table.Add(op, calls.ToString(CultureInfo.InvariantCulture), (seconds * 1000).ToString("F1", CultureInfo.InvariantCulture),
                (seconds / total).ToString("P0", CultureInfo.InvariantCulture));
        System.Console.WriteLine("profile of the last pass (each op waited for):");
        table.Write(System.Console.Out);
    }

    private const int Seed = 1234;

    private static IReadOnlyDictionary<string, DeviceTensor> LoadWeights(CompiledModelInfo info, string path, IBackend backend)
    {
        using var file = SafeTensorsFile.Open(path);
        return WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend, new ProgressBar("loading weights", "tensors"));
    }

    /// <summary>The same seeded weights as a file the PyTorch baseline can read, written once per model.</summary>
    private static string BaselineWeightsFile(ModelDescriptor model)
    {
        string path = Path.Combine(Path.GetTempPath(), $"influx-bench-{model.Name}-{Seed}.safetensors");
        if (!File.Exists(path))
        {
            System.Console.Error.WriteLine($"writing the benchmark's weights for the PyTorch baseline to {path}");
            RandomWeights.Write(model, path, Seed);
        }
        return path;
    }

    private static ForwardTiming TimeForward(CountingBackend backend, CompiledModelInfo info,
        IReadOnlyDictionary<string, DeviceTensor> weights, BenchOptions options)
    {
        try
        {
            var model = info.Create(backend, weights);
            var inputs = BenchInputs.Create(info.Descriptor, options.Batch, options.ImageTokens, options.TextTokens)
                .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
            try
            {
                var times = new List<double>();
                var progress = new ProgressBar("forward", "runs");
                for (int run = 0; run < options.Warmup + options.Runs; run++)
                {
                    backend.ResetCount();
                    var clock = Stopwatch.StartNew();
                    foreach (var output in model.Run(inputs).Values) output.Dispose();
                    backend.Synchronize();
                    if (run >= options.Warmup) times.Add(clock.Elapsed.TotalMilliseconds);
                    progress.Report((run + 1, options.Warmup + options.Runs));
                }
                times.Sort();
                return new ForwardTiming(times[times.Count / 2], backend.FloatingPointOperations,
                    new Dictionary<string, (double Seconds, int Calls)>(backend.Profile));
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

/// <summary>Inputs of a FLUX-style transformer at a given size: random activations, a row-major id grid.</summary>
public static class BenchInputs
{
    public static Dictionary<string, HostTensor> Create(ModelDescriptor model, int batch, int imageTokens, int textTokens)
    {
        int Param(string name) => int.Parse(model.Params[name], CultureInfo.InvariantCulture);
        var random = new Random(42);
        HostTensor Random(params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() * 2 - 1);
            return t;
        }
        int width = (int)Math.Ceiling(Math.Sqrt(imageTokens));
        var imgIds = new HostTensor(batch, imageTokens, 3);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < imageTokens; i++)
            {
                imgIds.Data[(b * imageTokens + i) * 3 + 1] = i / width;
                imgIds.Data[(b * imageTokens + i) * 3 + 2] = i % width;
            }
        var timesteps = new HostTensor(batch);
        var guidance = new HostTensor(batch);
        Array.Fill(timesteps.Data, 0.7f);
        Array.Fill(guidance.Data, 30f);
        return new Dictionary<string, HostTensor>
        {
            ["img"] = Random(batch, imageTokens, Param("in_channels")),
            ["img_ids"] = imgIds,
            ["txt"] = Random(batch, textTokens, Param("context_in_dim")),
            ["txt_ids"] = new HostTensor(batch, textTokens, 3),
            ["timesteps"] = timesteps,
            ["y"] = Random(batch, Param("vec_in_dim")),
            ["guidance"] = guidance,
        };
    }
}

/// <summary>
/// Seeded random weights for a compiled model: weight matrices ~ U(−√3, √3)/√fan_in (unit-variance activations
/// through the network), norm scales near 1, small biases. Fast enough for the 12B model (a counter-based hash
/// per element, in parallel), and stored in the model's checkpoint dtype.
/// </summary>
public static class RandomWeights
{
    public static HostTensor Generate(ParameterInfo parameter, int seed)
    {
        var t = new HostTensor(parameter.Shape);
        bool isNormScale = parameter.Name.EndsWith(".scale", StringComparison.Ordinal);
        float amplitude = parameter.Shape.Length == 2 ? (float)Math.Sqrt(3.0 / parameter.Shape[1]) : 0.02f;
        float center = isNormScale ? 1f : 0f;
        ulong stream = (ulong)seed * 0x9E3779B97F4A7C15UL ^ StableHash(parameter.Name);
        var data = t.Data;
        Parallel.For(0, (data.Length + 65535) / 65536, chunk =>
        {
            int end = Math.Min(data.Length, (chunk + 1) * 65536);
            for (int i = chunk * 65536; i < end; i++)
            {
                ulong z = stream + (ulong)i * 0x9E3779B97F4A7C15UL;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
                z ^= z >> 31;
                float unit = (z >> 40) * (1f / (1 << 24)) * 2f - 1f;
                data[i] = center + amplitude * unit;
            }
        });
        return t;
    }

    /// <summary>FNV-1a of the name: string.GetHashCode is randomised per process, and the same seed must give the same weights in every run.</summary>
    private static ulong StableHash(string name)
    {
        ulong hash = 0xCBF29CE484222325UL;
        foreach (char c in name) hash = (hash ^ c) * 0x100000001B3UL;
        return hash;
    }

    public static IReadOnlyDictionary<string, DeviceTensor> Upload(ModelDescriptor model, IBackend backend, int seed,
        IProgress<(int Done, int Total)>? progress = null)
    {
        var weights = new Dictionary<string, DeviceTensor>();
        foreach (var parameter in model.Parameters)
        {
            var host = Generate(parameter, seed);
            byte[] raw = DTypeEncoding.Encode(host.Data, parameter.DType);
            weights[parameter.Name] = backend.UploadWeight(parameter.Shape, parameter.DType, raw);
            progress?.Report((weights.Count, model.Parameters.Count));
        }
        return weights;
    }

    /// <summary>Writes float32 weights with the model's params as __metadata__.config (as BFL checkpoints carry them).</summary>
    public static void Write(ModelDescriptor model, string path, int seed)
    {
        var tensors = model.Parameters.Select(p => new KeyValuePair<string, HostTensor>(p.Name, Generate(p, seed)));
        var config = "{" + string.Join(", ", model.Params.Select(p => $"{JsonSerializer.Serialize(p.Key)}: {p.Value}")) + "}";
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "bfl", ["config"] = config });
    }
}

/// <summary>Runs bench/pytorch_flux_forward.py on the same weights and sizes.</summary>
public static class PyTorchBaseline
{
    public sealed record Result(double? MedianMs, double? GemmGflops, string? Error);

    public static Result Run(BenchOptions options, string weightsPath)
    {
        string? script = FindScript();
        if (script == null) return new Result(null, null, "bench/pytorch_flux_forward.py not found beside this build");
        if (!File.Exists(options.Python)) return new Result(null, null, $"{options.Python} not found (bench/install-pytorch-baseline.sh installs Debian's python3-torch)");
        var start = new ProcessStartInfo(options.Python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[]
                 {
                     script, "--weights", weightsPath, "--img-tokens", options.ImageTokens.ToString(CultureInfo.InvariantCulture),
                     "--txt-tokens", options.TextTokens.ToString(CultureInfo.InvariantCulture), "--batch", options.Batch.ToString(CultureInfo.InvariantCulture),
                     "--runs", options.Runs.ToString(CultureInfo.InvariantCulture), "--warmup", options.Warmup.ToString(CultureInfo.InvariantCulture),
                 })
            start.ArgumentList.Add(arg);
        System.Console.Error.WriteLine("running the PyTorch baseline …");
        using var process = Process.Start(start)!;
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            string reason = stderr.Contains("No module named 'torch'", StringComparison.Ordinal)
                ? $"{options.Python} has no torch (run bench/install-pytorch-baseline.sh)"
                : $"the baseline exited with {process.ExitCode}: {stderr.Trim().Split('\n').LastOrDefault()}";
            return new Result(null, null, reason);
        }
        string? json = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'));
        if (json == null) return new Result(null, null, "the baseline printed no result line");
        using var doc = JsonDocument.Parse(json);
        double? gemm = doc.RootElement.TryGetProperty("gemm_gflops_1024", out var g) ? g.GetDouble() : null;
        return new Result(doc.RootElement.GetProperty("median_ms").GetDouble(), gemm, null);
    }

    private static string? FindScript()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "bench", "pytorch_flux_forward.py");
            if (File.Exists(candidate)) return candidate;
        }
        string fromWorkingDir = Path.Combine(Directory.GetCurrentDirectory(), "bench", "pytorch_flux_forward.py");
        return File.Exists(fromWorkingDir) ? fromWorkingDir : null;
    }
}
