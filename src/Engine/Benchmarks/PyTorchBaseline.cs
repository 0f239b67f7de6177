using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace InFluxEdit.Benchmarks;

/// <summary>
/// Runs bench/pytorch_flux_forward.py on the same weights and sizes, on the same device and in the same dtype as our
/// run, in a process whose environment has the machine's BLAS overrides removed, so the ratio compares our best
/// against PyTorch's best.
/// </summary>
public static class PyTorchBaseline
{
    /// <summary>
    /// Variables that force OpenBLAS onto another CPU's kernels or cache size. Machines set them for their own jobs
    /// (OPENBLAS_CORETYPE=Haswell on an AVX-512 machine halves OpenBLAS's GEMM rate); the baseline runs without them.
    /// </summary>
    public static readonly IReadOnlyList<string> RemovedVariables = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

    /// <summary>What the baseline runs: where, in which dtype, at which size, and a forward or a LoRA training step.</summary>
    /// <param name="Device">cpu or cuda.</param>
    /// <param name="DType">fp32 or bf16: the baseline's weights and activations.</param>
    /// <param name="WeightsArguments">--weights FILE or --random-weights MANIFEST.json.</param>
    /// <param name="Train">A LoRA step, kept and recomputed (the manifest names the adapters), instead of a forward.</param>
    public sealed record Request(string Python, string Device, string DType, IReadOnlyList<string> WeightsArguments,
        int ImageTokens, int TextTokens, int Batch, int Runs, int Warmup, bool Train = false);

    /// <summary>One timed training step of the baseline.</summary>
    /// <param name="MedianMs">Null when the step did not run (<paramref name="Error"/> says why: "out of memory" where keeping every activation does not fit).</param>
    /// <param name="PeakBytes">torch.cuda.max_memory_allocated over the steps (weights included); null on the CPU.</param>
    public sealed record TrainStep(bool Recompute, double? MedianMs, long? PeakBytes, string? Error = null);

    /// <param name="MedianMs">A forward's median; null for a training run (see <see cref="TrainSteps"/>) or when it failed.</param>
    /// <param name="GemmGflops">A product measured in the same process: float32 1024³ on the CPU, 8192³ in the dtype on a GPU.</param>
    /// <param name="BlasKernel">The BLAS library and kernel the baseline ran on, e.g. "openblas 0.3.21, SkylakeX kernels".</param>
    public sealed record Result(double? MedianMs, double? GemmGflops, string? BlasKernel, string? Error)
    {
        public string? Device { get; init; }
        public string? DType { get; init; }

        /// <summary>The GPU's name, on CUDA.</summary>
        public string? Gpu { get; init; }
        public string? Torch { get; init; }

        /// <summary>sdpa (scaled_dot_product_attention, torch ≥ 2.0) or matmul_softmax.</summary>
        public string? Attention { get; init; }

        /// <summary>The forward's peak device memory (weights included); null on the CPU.</summary>
        public long? PeakBytes { get; init; }
        public IReadOnlyList<TrainStep>? TrainSteps { get; init; }

        public static Result Failed(string error) => new(null, null, null, error);
    }

    public static Result Run(Request request, TextWriter log)
    {
        string? script = FindScript();
        if (script == null) return Result.Failed("bench/pytorch_flux_forward.py not found beside this build");
        if (Path.IsPathRooted(request.Python) && !File.Exists(request.Python))
            return Result.Failed($"{request.Python} not found (bench/install-pytorch-baseline.sh installs Debian's python3-torch; a GPU image's is on PATH: --python python3)");
        var start = new ProcessStartInfo(request.Python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string variable in RemovedVariables) start.Environment.Remove(variable);
        foreach (string arg in Arguments(script, request)) start.ArgumentList.Add(arg);
        log.WriteLine($"running the PyTorch baseline ({request.Device}, {request.DType}{(request.Train ? ", LoRA training step" : "")}) …");
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return Result.Failed($"cannot start {request.Python}: {e.Message} (--python names the Python that has torch)");
        }
        using (process)
        {
            var stderrTask = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            string stderr = stderrTask.Result;
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                string reason = stderr.Contains("No module named 'torch'", StringComparison.Ordinal) || process.ExitCode == 3
                    ? $"{request.Python} has no torch (run bench/install-pytorch-baseline.sh)"
                    : $"the baseline exited with {process.ExitCode}: {stderr.Trim().Split('\n').LastOrDefault()}";
                return Result.Failed(reason);
            }
            string? json = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'));
            return json == null ? Result.Failed("the baseline printed no result line") : Parse(json);
        }
    }

    /// <summary>The script's command line for a request (its options are documented in the script).</summary>
    public static IReadOnlyList<string> Arguments(string script, Request request)
    {
        string I(int value) => value.ToString(CultureInfo.InvariantCulture);
        var args = new List<string> { script };
        args.AddRange(request.WeightsArguments);
        args.AddRange([
            "--device", request.Device, "--dtype", request.DType, "--img-tokens", I(request.ImageTokens), "--txt-tokens", I(request.TextTokens),
            "--batch", I(request.Batch), "--runs", I(request.Runs), "--warmup", I(request.Warmup),
        ]);
        if (request.Train) args.AddRange(["--train", "--recompute", "both"]);
        return args;
    }

    /// <summary>The script's JSON result line as a <see cref="Result"/>.</summary>
    public static Result Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        double? Number(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
        long? Bytes(JsonElement e) => e.TryGetProperty("peak_bytes", out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : null;
        string? Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        if (Text("error") is { } error) return Result.Failed(error);
        List<TrainStep>? steps = null;
        if (root.TryGetProperty("train", out var train) && train.ValueKind == JsonValueKind.Array)
            steps = train.EnumerateArray().Select(s => new TrainStep(s.GetProperty("recompute").GetBoolean(), Number(s, "median_ms"), Bytes(s),
                s.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String ? e.GetString() : null)).ToList();
        return new Result(Number(root, "median_ms"), Number(root, "gemm_gflops"), DescribeKernel(root), null)
        {
            Device = Text("device"), DType = Text("dtype"), Gpu = Text("gpu"), Torch = Text("torch"), Attention = Text("attention"),
            PeakBytes = Bytes(root), TrainSteps = steps,
        };
    }

    /// <summary>"openblas 0.3.21, SkylakeX kernels, 2 threads (threadpoolctl)", or the library's name alone when the script could not tell.</summary>
    public static string? DescribeKernel(JsonElement result)
    {
        string? library = result.TryGetProperty("blas", out var blas) ? blas.GetString() : null;
        if (!result.TryGetProperty("blas_kernel", out var kernel) || kernel.ValueKind != JsonValueKind.Object) return library;
        string? Text(string name) => kernel.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value.ToString() : null;
        var parts = new List<string> { string.Join(" ", new[] { Text("library") ?? library, Text("version") }.Where(p => p != null)) };
        if (Text("kernel") is { } core) parts.Add($"{core} kernels");
        if (Text("threads") is { } threads) parts.Add($"{threads} threads");
        return string.Join(", ", parts) + (Text("via") is { } via ? $" ({via})" : "");
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
