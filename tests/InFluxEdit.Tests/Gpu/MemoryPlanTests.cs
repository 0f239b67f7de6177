using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Planning;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The memory plan against the ILGPU backend's own count: the same tiny FLUX run on the simulator (real kernels, real
/// pools) and on a <see cref="MemoryPlanBackend"/> set up as that simulator (no cuBLAS, its launch targets) must hold
/// the same weight bytes and reach the same <see cref="IMemoryStatistics"/> peak, byte for byte. The plan's weights are
/// placed from the schema's shapes (no file), the simulator's are seeded random ones loaded as bench does.
/// </summary>
public sealed class MemoryPlanTests
{
    private static readonly string Model = FluxFillTiny.Descriptor.Name;

    // One sample of a few tokens: the simulator is slow, and every pool and policy is exercised at any size.
    private const int ImageTokens = 6, TextTokens = 3;

    public enum Work { Forward, LoraStep, LoraStepRecompute, LoraStepOffloadedCheckpoints, VaeRoundTrip }

    // Cases grouped by simulator: each new one compiles its kernels again, which is most of the time a case takes.

    [Fact]
    public void Float32ForwardAndLoraStepsWithoutRecomputationAndWithItOnAQ80Base() =>
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.Float32), null,
            (Work.Forward, null), (Work.LoraStep, null), (Work.LoraStepRecompute, "q8_0"));

    [Fact]
    public void BFloat16ForwardsOnBf16AndQ4KBasesLoraStepsAndAVaeRoundTrip() =>
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.BFloat16), null, (Work.Forward, null), (Work.Forward, "q4_k"),
            (Work.LoraStep, null), (Work.LoraStepRecompute, "q4_k"), (Work.LoraStepOffloadedCheckpoints, null), (Work.VaeRoundTrip, null));

    [Fact]
    public void ForwardWithWeightsOffloaded()
    {
        var matrices = FluxFillTiny.Descriptor.Parameters.Where(p => p.Shape.Length >= 2);
        // Half the matrices' float32 bytes: weights stream through the arena, which the count includes.
        long budget = matrices.Sum(p => HostTensor.ElementCount(p.Shape) * sizeof(float)) / 2;
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.Float32), budget, (Work.Forward, null), (Work.Forward, "fp8"));
    }

    /// <summary>
    /// The check edit runs on CUDA before loading: a plan that fits the free memory passes, one that does not is refused
    /// naming its need and a setting whose own plan fits. Planned for a CUDA device (no GPU needed to plan one).
    /// </summary>
    [Fact]
    public void AnEditBeyondTheFreeMemoryIsRefusedWithASettingThatFits()
    {
        var transformer = global::InFluxEdit.Benchmarks.Benchmarks.Compiled(Model);
        var vae = global::InFluxEdit.Benchmarks.Benchmarks.Compiled(FluxVaeTiny.Descriptor.Name);
        var device = PlannedDevice.Cuda(GpuPrecision.Float32);
        var tiling = global::InFluxEdit.Fill.VaeTiling.Default;
        // A 16×16 image: the transformer is freed before the decode, so its phase must be the edit's fullest for its
        // base precision to matter, and the tiny VAE's decode outgrows the tiny transformer at larger sizes.
        long Needed(string? basePrecision) => MemoryPlan.EditNeededBytes(device, transformer, vae, 16, 16, 8, BasePrecision.Parse(basePrecision), tiling);
        string? Shortfall(long free) => MemoryPlan.GpuShortfallForEditing(device, free, "the test GPU", transformer, vae, 16, 16, 8, null, tiling);
        long asStored = Needed(null), quantized = Needed("q4_k");
        quantized.ShouldBeLessThan(asStored);

        Shortfall(asStored).ShouldBeNull();
        string refusal = Shortfall(quantized).ShouldNotBeNull();
        refusal.ShouldContain("the test GPU");
        refusal.ShouldContain("--base-precision q4_k");
    }

    /// <summary>The check train runs on CUDA before caching and loading: the need of the run's own LoRA step, and what fits instead.</summary>
    [Fact]
    public void TrainingBeyondTheFreeMemoryIsRefusedWithRecomputationThatFits()
    {
        var transformer = global::InFluxEdit.Benchmarks.Benchmarks.Compiled(Model);
        var device = PlannedDevice.Cuda(GpuPrecision.Float32);
        string? Shortfall(long free, bool recompute) =>
            MemoryPlan.GpuShortfallForTraining(device, free, "the test GPU", transformer, 64, 8, 2, 4, "diffusers", recompute, offloadCheckpoints: false, null, null);
        var plan = new MemoryPlanBackend(device);
        var settings = new BenchSettings { Model = Model, ImageTokens = 64, TextTokens = 8, Batch = 2, Rank = 4, Preset = "diffusers" };
        MemoryPlan.LoraStepPeak(plan, settings, recompute: false, model => plan.PlaceWeights(model), out _);
        long kept = plan.PeakNeededBytes;
        Shortfall(kept, recompute: false).ShouldBeNull();
        string refusal = Shortfall(kept - 1, recompute: false).ShouldNotBeNull();
        refusal.ShouldContain("the test GPU");
        refusal.ShouldContain("--recompute (");
        refusal.ShouldContain("--recompute --offload-checkpoints (");
        refusal.ShouldContain("batch 2");
    }

    /// <summary>
    /// A file's own formats decide what loading holds (an fp8 or GGUF file stays quantized under "keep", the default,
    /// and decodes to float32 without a precision): the plan places them from the file's stored formats exactly as the
    /// simulator's loader holds them, byte for byte.
    /// </summary>
    [Theory]
    [InlineData("flux-tiny-fp8.safetensors", TensorFormat.F8_E4M3)]
    [InlineData("flux-tiny-Q4_K.gguf", TensorFormat.Q4_K)]
    public void APlanPlacesAFilesStoredFormatsAsLoadingHoldsThem(string name, TensorFormat format)
    {
        using var dir = new TempDir();
        string path = dir.File(name);
        Runtime.WeightFiles.WeightConverter.Convert(TestPaths.Golden("flux-tiny.safetensors"), path, format);
        using var file = Runtime.WeightFiles.WeightFile.Open(path);
        var descriptor = FluxFillTiny.Descriptor;
        var stored = Runtime.Models.WeightLoader.StoredFormats([file], descriptor.CanonicalKey);
        using var simulator = IlgpuBackend.CreateCpuSimulator(GpuPrecision.BFloat16);
        foreach (var precision in new[] { BasePrecision.Keep, null })
        {
            var loaded = Runtime.Models.WeightLoader.Load(descriptor.Parameters, [file], simulator, ignored: descriptor.Ignores, precision: precision);
            long loadedBytes = loaded.Values.Sum(w => w.StoredBytes);
            foreach (var w in loaded.Values) w.Dispose();
            var plan = new MemoryPlanBackend(PlannedDevice.Of(simulator));
            var placed = plan.PlaceWeights(descriptor, precision, stored);
            placed.Values.Sum(w => w.StoredBytes).ShouldBe(loadedBytes, $"{name} held as {precision?.ToString() ?? "stored, decoded"}");
        }
    }

    /// <summary>Runs each work on the simulator and on a plan of it, in the same order (pools carry over), and compares every one.</summary>
    private static void Compare(IlgpuBackend simulator, long? offloadBudget, params (Work Work, string? Base)[] works)
    {
        using var owned = simulator;
        if (offloadBudget is long budget)
            simulator.EnableWeightOffload(new WeightOffload(budget));
        var plan = new MemoryPlanBackend(PlannedDevice.Of(simulator));
        var info = global::InFluxEdit.Benchmarks.Benchmarks.Compiled(Model);
        foreach (var (work, text) in works)
        {
            var basePrecision = BasePrecision.Parse(text);
            var (simulatorWeights, simulatorPeak) = Measure(simulator, info, work, basePrecision, null);
            var (planWeights, planPeak) = Measure(plan, info, work, basePrecision, model => plan.PlaceWeights(model, basePrecision));
            string what = $"{work} on {text ?? "bf16"} weights, {simulator.Precision}";
            simulatorPeak.ShouldBeGreaterThan(0, what);
            planWeights.ShouldBe(simulatorWeights, $"weight bytes of {what}");
            planPeak.ShouldBe(simulatorPeak, $"the IMemoryStatistics peak of {what}");
            // Weights and pools at their fullest moment: at least the weights, at most both peaks added.
            plan.PeakTotalBytes.ShouldBeInRange(planWeights, planWeights + planPeak, what);
            // What the run needs leaves parked buffers out: no more than that total.
            plan.PeakNeededBytes.ShouldBeInRange(planWeights, plan.PeakTotalBytes, what);
        }
    }

    private static (long WeightBytes, long Peak) Measure(IBackend backend, Runtime.Models.CompiledModelInfo info, Work work, BasePrecision? basePrecision,
        Func<Runtime.Models.ModelDescriptor, IReadOnlyDictionary<string, DeviceTensor>>? place)
    {
        if (work == Work.VaeRoundTrip)
        {
            // The autoencoder's ops (convolutions, group norms, upsampling, its attention) and the downloads between tiles.
            var vae = global::InFluxEdit.Benchmarks.Benchmarks.Compiled(FluxVaeTiny.Descriptor.Name);
            var weights = place?.Invoke(vae.Descriptor) ?? RandomWeights.Upload(vae.Descriptor, backend, 7);
            try
            {
                var model = vae.Create(backend, weights);
                ((IMemoryStatistics)backend).ResetPeak();
                var latent = global::InFluxEdit.Fill.VaeTiles.Encode(model, new HostTensor(1, 3, 16, 24), new global::InFluxEdit.Fill.VaeTiling(global::InFluxEdit.Fill.VaeTiling.MinimumTilePixels));
                global::InFluxEdit.Fill.VaeTiles.Decode(model, latent, global::InFluxEdit.Fill.VaeTiling.Off);
                return (weights.Values.Sum(w => w.StoredBytes), ((IMemoryStatistics)backend).PeakAllocatedBytes);
            }
            finally
            {
                foreach (var w in weights.Values) w.Dispose();
            }
        }
        if (work == Work.Forward)
        {
            var weights = place?.Invoke(info.Descriptor) ?? RandomWeights.Upload(info.Descriptor, backend, 7, precision: basePrecision);
            try
            {
                long peak = MemoryPlan.ForwardPeak(backend, info, weights, ImageTokens, TextTokens);
                return (weights.Values.Sum(w => w.StoredBytes), peak);
            }
            finally
            {
                foreach (var w in weights.Values) w.Dispose();
            }
        }
        var settings = new BenchSettings { Model = Model, ImageTokens = ImageTokens, TextTokens = TextTokens, Rank = 4, BasePrecision = basePrecision };
        // One step: a second runs the same ops, and the simulator is slow.
        long stepPeak = MemoryPlan.LoraStepPeak(backend, settings, work is Work.LoraStepRecompute or Work.LoraStepOffloadedCheckpoints, place, out long weightBytes,
            steps: 1, offloadCheckpoints: work == Work.LoraStepOffloadedCheckpoints);
        return (weightBytes, stepPeak);
    }
}
