using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Commands;

[Verb("bench", HelpText = "Benchmarks. 'bench forward' times one transformer forward pass (median after warm-up) and, when available, the same model in PyTorch on the CPU in the same run.")]
public sealed class BenchOptions : DeviceOptions
{
    [Value(0, MetaName = "WHAT", Required = true, HelpText = "What to time: forward.")]
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

    [Option("python", Default = "/usr/bin/python3", HelpText = "The Python that has torch (bench/install-pytorch-baseline.sh installs Debian's).")]
    public string Python { get; set; } = "/usr/bin/python3";
}

public static class BenchCommand
{
    public static int Run(BenchOptions options)
    {
        if (options.What != "forward")
            throw new ArgumentException($"unknown benchmark '{options.What}': this build has 'forward'");
        var info = ModelCatalog.All.FirstOrDefault(m => m.Descriptor.Name == options.Model)
            ?? throw new ArgumentException($"no compiled model '{options.Model}' (compiled: {string.Join(", ", ModelCatalog.All.Select(m => m.Descriptor.Name))})");

        string weightsPath = options.Weights ?? Path.Combine(Path.GetTempPath(), $"influx-bench-{info.Descriptor.Name}.safetensors");
        if (options.Weights == null && !File.Exists(weightsPath))
        {
            System.Console.Error.WriteLine($"writing seeded random weights for {info.Descriptor.Name} to {weightsPath}");
            RandomWeights.Write(info.Descriptor, weightsPath, seed: 1234);
        }

        using var inner = options.CreateBackend(System.Console.Out);
        var backend = new CountingBackend(inner);
        var result = TimeForward(backend, info, weightsPath, options);
        double gemm = MeasureGemm(backend, 1024);

        var table = new ConsoleTable("implementation", "device", "median ms", "tokens/s", "GFLOP/s", "vs PyTorch");
        double? baselineMs = null;
        string? baselineNote = null;
        if (options.Baseline != "none")
        {
            var baseline = PyTorchBaseline.Run(options, weightsPath);
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
        if (baselineNote != null) System.Console.WriteLine($"PyTorch baseline not run: {baselineNote}");
        return 0;
    }

    private sealed record ForwardTiming(double MedianMs, double Flops);

    private static ForwardTiming TimeForward(CountingBackend backend, CompiledModelInfo info, string weightsPath, BenchOptions options)
    {
        using var file = SafeTensorsFile.Open(weightsPath);
        var weights = WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend, new ProgressBar("loading weights", "tensors"));
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
                return new ForwardTiming(times[times.Count / 2], backend.FloatingPointOperations);
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

/// <summary>Seeded random weights for a compiled model, saved with its params as __metadata__.config.</summary>
public static class RandomWeights
{
    public static void Write(ModelDescriptor model, string path, int seed)
    {
        var random = new Random(seed);
        var tensors = new List<KeyValuePair<string, HostTensor>>();
        foreach (var parameter in model.Parameters)
        {
            var t = new HostTensor(parameter.Shape);
            bool isNormScale = parameter.Name.EndsWith(".scale", StringComparison.Ordinal);
            double std = parameter.Shape.Length == 2 ? 1.0 / Math.Sqrt(parameter.Shape[1]) : 0.02;
            for (int i = 0; i < t.Data.Length; i++)
            {
                double gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
                t.Data[i] = (float)((isNormScale ? 1 : 0) + std * gaussian);
            }
            tensors.Add(new(parameter.Name, t));
        }
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
