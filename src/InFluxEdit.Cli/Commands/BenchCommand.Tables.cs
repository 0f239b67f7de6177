using System.Globalization;
using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Console;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

/// <summary>How bench prints its results: the tables and lines of each benchmark, apart from option handling.</summary>
public static partial class BenchCommand
{
    private static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

    private static void WriteForward(ForwardBenchResult result, BenchOptions options, CommandOutput output)
    {
        var baseline = result.Baseline;
        if (baseline?.Error != null && options.Baseline == "pytorch") throw new InvalidOperationException(baseline.Error);
        if (baseline?.GemmGflops is double blas)
            output.Log.WriteLine(baseline.Device == "cuda"
                ? $"PyTorch {baseline.Torch} on {baseline.Gpu}: {baseline.DType} 8192³ matmul {blas / 1000:F1} TFLOP/s (same run), attention by {baseline.Attention}"
                : $"BLAS float32 1024³ GEMM (PyTorch, same run): {blas:F1} GFLOP/s");
        if (baseline?.BlasKernel != null)
            output.Log.WriteLine($"PyTorch's BLAS: {baseline.BlasKernel}; run without {string.Join(" and ", PyTorchBaseline.RemovedVariables)}");
        output.Log.WriteLine($"our float32 1024³ GEMM on {result.Device}: {result.GemmGflops:F1} GFLOP/s");
        var table = output.Table("implementation", "device", "median ms", "tokens/s", "GFLOP/s", "vs PyTorch", "peak device memory");
        table.AddCells("influx-cli (" + result.Model + ")", result.Device, F(result.MedianMs, "F1"), F(result.Tokens / (result.MedianMs / 1000), "F0"),
            F(result.Flops / (result.MedianMs / 1000) / 1e9, "F1"), result.Ratio is double ratio ? F(ratio, "F2") + "x time" : "-", Bytes(result.PeakDeviceBytes));
        if (baseline?.MedianMs is double ms)
            table.AddCells($"PyTorch ({baseline.Device}, {baseline.DType}, eager)", baseline.Device ?? "-", F(ms, "F1"), F(result.Tokens / (ms / 1000), "F0"),
                F(result.Flops / (ms / 1000) / 1e9, "F1"), "1.00x", Bytes(baseline.PeakBytes));
        output.Log.WriteLine($"forward of {result.Model}: batch {options.Batch}, {options.ImageTokens} image + {options.TextTokens} text tokens, " +
                                 $"{result.Flops / 1e9:F1} GFLOP per pass, median of {options.Runs} after {options.Warmup} warm-up");
        output.Log.WriteLine($"weights held on the device: {TrainingProgress.FormatBytes(result.WeightBytes)} ({options.BasePrecision ?? (options.Weights != null ? "keep: as the file stores them" : "as the model's dtype")}); " +
                             $"peak process memory: {TrainingProgress.FormatBytes(result.PeakProcessBytes)}" + PeakDevice(result.PeakDeviceBytes));
        output.Write(table);
        if (result.Profile != null) WriteProfile(result.Profile, output);
        if (baseline?.Error != null) output.Log.WriteLine($"PyTorch baseline not run: {baseline.Error}");
    }

    /// <summary>A peak in memory units, "-" where it was not counted (the CPU).</summary>
    private static string Bytes(long? bytes) => bytes is long b ? TrainingProgress.FormatBytes(b) : "-";

    /// <summary>"; peak device memory: …" from the backend's own count, or nothing where it does not count.</summary>
    private static string PeakDevice(long? bytes) => bytes is long peak
        ? $"; peak device memory (weights held on it plus the backend's peak count, an --offload budget included): {TrainingProgress.FormatBytes(peak)}"
        : "";

    private static void WriteEdit(EditBenchResult result, CommandOutput output)
    {
        var table = output.Table("model", "vae", "device", "size", "method", "s per step (median)", "s per image", "steps");
        table.AddCells(result.Model, result.Vae, result.Device, $"{result.Width}×{result.Height}", result.Method.ToString().ToLowerInvariant(),
            F(result.SecondsPerStep, "F3"), F(result.SecondsPerImage, "F2"), result.Steps.ToString(CultureInfo.InvariantCulture));
        output.Write(table);
        if (result.TextEncoders != null)
            output.Log.WriteLine($"the image's time includes encoding the prompt with {result.TextEncoders}: {F(result.TextEncodingSeconds ?? double.NaN, "F3")} s");
        if (result.PeakDeviceBytes != null) output.Log.WriteLine("edit" + PeakDevice(result.PeakDeviceBytes).TrimStart(';'));
    }

    private static void WriteTraining(TrainBenchResult result, BenchOptions options, CommandOutput output)
    {
        var baseline = result.Baseline;
        if (baseline?.Error != null && options.Baseline == "pytorch") throw new InvalidOperationException(baseline.Error);
        var table = output.Table("model", "device", "tokens", "adapters", "recompute", "forward ms", "s per train step", "step / forward",
            result.PeakCountedByBackend ? "peak memory" : "peak process memory");
        foreach (var step in result.Steps)
            table.AddCells(result.Model, result.Device, $"{options.ImageTokens}+{options.TextTokens}", result.Adapters, step.Label,
                F(result.ForwardMs, "F1"), F(step.StepMs / 1000, "F3"), F(step.StepMs / result.ForwardMs, "F2") + "×", TrainingProgress.FormatBytes(step.PeakBytes));
        output.Write(table);
        var (kept, recomputed) = (result.Steps[0], result.Steps[1]);
        output.Log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"recomputing: {recomputed.StepMs / kept.StepMs:F2}× the step time, {(double)recomputed.PeakBytes / kept.PeakBytes:F2}× the peak memory " +
            $"({(result.PeakCountedByBackend ? $"{TrainingProgress.FormatBytes(result.WeightBytes)} of weights plus the backend's peak count" : "the process's peak working set, which never goes down: read the first row's")}; " +
            $"the process held {TrainingProgress.FormatBytes(result.ProcessBytesAfterForward)} after the forward runs)"));
        if (baseline?.TrainSteps != null)
        {
            var versus = output.Table("recompute", "ours s per step", "PyTorch s per step", "ours / PyTorch", "ours peak", "PyTorch peak");
            foreach (var step in result.Comparison)
                versus.AddCells(step.Recompute, F(step.StepMs / 1000, "F3"), step.BaselineMs is double ms ? F(ms / 1000, "F3") : step.BaselineError ?? "-",
                    step.Ratio is double ratio ? F(ratio, "F2") + "x time" : "-", TrainingProgress.FormatBytes(step.PeakBytes), Bytes(step.BaselinePeakBytes));
            output.Log.WriteLine($"PyTorch {baseline.Torch} ({baseline.Device}, {baseline.DType} base, float32 LoRA, AdamW; recomputation by torch.utils.checkpoint per block), same run:");
            output.Write(versus);
        }
        if (baseline?.Error != null) output.Log.WriteLine($"PyTorch baseline not run: {baseline.Error}");
        if (result.Profile == null) return;
        WriteProfile(result.Profile, output);
        // The products' work sets a floor under the time ratio: attention's backward alone has 5 products to the forward's 2.
        output.Log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"work: {result.StepGflop:F1} GFLOP per step, {result.ForwardGflop:F1} per forward: {result.StepGflop / result.ForwardGflop:F2}× in products alone"));
    }

    private static void WriteProfile(OpProfile profile, CommandOutput output)
    {
        double total = profile.Ops.Values.Sum(p => p.Seconds);
        var table = output.Table("op", "calls", "ms per pass", "share");
        foreach (var (op, (seconds, calls)) in profile.Ops.OrderByDescending(p => p.Value.Seconds))
            table.AddCells(op, calls.ToString(CultureInfo.InvariantCulture), F(seconds * 1000, "F1"), (seconds / total).ToString("P0", CultureInfo.InvariantCulture));
        output.Log.WriteLine("profile of a pass after the timed ones (each op waited for):");
        output.Write(table);
        foreach (var (what, rate) in new[] { ("products", profile.Achieved.Products), ("attention", profile.Achieved.Attention) })
            if (rate != null)
                output.Log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"achieved by the {what}: {rate.TeraflopsPerSecond:G3} TFLOP/s ({rate.Operations / 1e12:F2} TFLOP in {rate.Seconds * 1000:F1} ms)"));
    }
}
