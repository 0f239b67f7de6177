using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace InFluxEdit.Benchmarks;

/// <summary>
/// Runs bench/pytorch_flux_forward.py on the same weights and sizes, in a process whose environment has the
/// machine's BLAS overrides removed, so the ratio compares our best against PyTorch's best.
/// </summary>
public static class PyTorchBaseline
{
    /// <summary>
    /// Variables that force OpenBLAS onto another CPU's kernels or cache size. Machines set them for their own jobs
    /// (OPENBLAS_CORETYPE=Haswell on an AVX-512 machine halves OpenBLAS's GEMM rate); the baseline runs without them.
    /// </summary>
    public static readonly IReadOnlyList<string> RemovedVariables = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

    /// <param name="BlasKernel">The BLAS library and kernel the baseline ran on, e.g. "openblas 0.3.21, SkylakeX kernels".</param>
    public sealed record Result(double? MedianMs, double? GemmGflops, string? BlasKernel, string? Error);

    public static Result Run(string python, string weightsPath, int imageTokens, int textTokens, int batch, int runs, int warmup, TextWriter log)
    {
        string? script = FindScript();
        if (script == null) return new Result(null, null, null, "bench/pytorch_flux_forward.py not found beside this build");
        if (!File.Exists(python)) return new Result(null, null, null, $"{python} not found (bench/install-pytorch-baseline.sh installs Debian's python3-torch)");
        var start = new ProcessStartInfo(python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string variable in RemovedVariables) start.Environment.Remove(variable);
        foreach (string arg in new[]
                 {
                     script, "--weights", weightsPath, "--img-tokens", imageTokens.ToString(CultureInfo.InvariantCulture),
                     "--txt-tokens", textTokens.ToString(CultureInfo.InvariantCulture), "--batch", batch.ToString(CultureInfo.InvariantCulture),
                     "--runs", runs.ToString(CultureInfo.InvariantCulture), "--warmup", warmup.ToString(CultureInfo.InvariantCulture),
                 })
            start.ArgumentList.Add(arg);
        log.WriteLine("running the PyTorch baseline …");
        using var process = Process.Start(start)!;
        var stderrTask = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = stderrTask.Result;
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            string reason = stderr.Contains("No module named 'torch'", StringComparison.Ordinal) || process.ExitCode == 3
                ? $"{python} has no torch (run bench/install-pytorch-baseline.sh)"
                : $"the baseline exited with {process.ExitCode}: {stderr.Trim().Split('\n').LastOrDefault()}";
            return new Result(null, null, null, reason);
        }
        string? json = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'));
        if (json == null) return new Result(null, null, null, "the baseline printed no result line");
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        double? gemm = root.TryGetProperty("gemm_gflops_1024", out var g) ? g.GetDouble() : null;
        return new Result(root.GetProperty("median_ms").GetDouble(), gemm, DescribeKernel(root), null);
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
