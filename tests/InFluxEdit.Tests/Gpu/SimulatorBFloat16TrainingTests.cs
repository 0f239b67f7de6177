using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Parity;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Runtime.Backends.Gpu;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Training in bf16 precision on the simulator: the forward's saved activations and the backward's activation gradients
/// are bf16 words, parameters, their gradients and the optimizer's state float32.
/// </summary>
public sealed class SimulatorBFloat16TrainingTests(ITestOutputHelper output)
{
    /// <summary>
    /// The LoRA-gradient golden case (loss, every adapter's and img_in's gradient, two AdamW steps) through
    /// `parity --precision bf16`'s judgement: every tensor within the bf16 bar (relative L2 ≤ 1e-2) of the float64
    /// reference, and the gradients above float32's error level, which shows the pass really stored bf16.
    /// </summary>
    [Fact]
    public void LoraGradientGoldenCaseInBFloat16IsWithinTheBFloat16Bar()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = IlgpuBackend.CreateCpuSimulator(GpuPrecision.BFloat16);
        var rows = new ParityRunner(manifest, backend) { ToleranceFloor = ParityRunner.BFloat16Tolerance }
            .Run(manifest.Find("flux-tiny-lora-grad")!, outDir: null);
        foreach (var row in rows)
            output.WriteLine($"{row.Tensor}: rel L2 {row.Error:E2}");
        Assert.NotEmpty(rows);
        Assert.DoesNotContain(rows, r => r.Status == ParityStatus.Skipped);
        var beyond = rows.Where(r => r.Status != ParityStatus.Passed).Select(r => $"{r.Tensor}: {r.Error:E2} > {r.Tolerance:E0} {r.Note}").ToList();
        Assert.True(beyond.Count == 0, string.Join("\n", beyond));
        Assert.True(rows.Where(r => r.Tensor.StartsWith("grad.", StringComparison.Ordinal)).Max(r => r.Error) > 1e-4,
            "every gradient is as exact as float32: were the activations bf16?");
    }
}

/// <summary>The activation memory of one LoRA training step (the backend's own peak count) in bf16 against float32.</summary>
public sealed class SimulatorBFloat16TrainingMemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void BFloat16TrainingStepHoldsAboutHalfTheActivationBytes()
    {
        long float32 = PeakActivationBytes(GpuPrecision.Float32);
        long bf16 = PeakActivationBytes(GpuPrecision.BFloat16);
        double ratio = (double)bf16 / float32;
        output.WriteLine($"peak activation bytes: float32 {float32}, bf16 {bf16}, ratio {ratio:F3}");
        Assert.InRange(ratio, 0.4, 0.65);
    }

    /// <summary>
    /// The pooled bytes above what the step starts with, at its peak: saved activations, activation gradients and
    /// scratch (weights are exact allocations outside the pools; the LoRA parameters are allocated before).
    /// </summary>
    private static long PeakActivationBytes(GpuPrecision precision)
    {
        using var backend = IlgpuBackend.CreateCpuSimulator(precision);
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, new[] { file }, backend);
        var inputs = BenchInputs.Create(FluxFillTiny.Descriptor, batch: 1, imageTokens: 32, textTokens: 8)
            .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
        var targets = LoraTargets.Preset("kohya", FluxFillTiny.Descriptor);
        var parameters = LoraInit.Create(backend, targets, 4, LoraInitKind.Gaussian, new TrainingRandom(7));
        try
        {
            var model = new FluxFillTiny(backend, weights) { Training = LoraInit.Attach(targets, parameters, scale: 1f) };
            long before = backend.AllocatedBytes;
            backend.ResetPeak();
            model.ForwardBackward(inputs, result => backend.Upload(new HostTensor(result.Shape)));
            return backend.PeakAllocatedBytes - before;
        }
        finally
        {
            foreach (var p in parameters)
            {
                p.Value.Dispose();
                p.Gradient.Dispose();
            }
            foreach (var t in inputs.Values.Concat(weights.Values)) t.Dispose();
        }
    }
}
