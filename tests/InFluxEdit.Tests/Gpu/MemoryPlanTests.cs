using ILGPU.Runtime.CPU;
using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
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

    public enum Work { Forward, LoraStep, LoraStepRecompute }

    // Cases grouped by simulator: each new one compiles its kernels again, which is most of the time a case takes.

    [Fact]
    public void Float32ForwardAndLoraStepsWithAndWithoutRecomputationOnBf16AndQ80Bases() =>
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.Float32), null,
            (Work.Forward, null), (Work.LoraStep, null), (Work.LoraStepRecompute, null), (Work.LoraStep, "q8_0"));

    [Fact]
    public void BFloat16ForwardsOnBf16AndQ4KBases() =>
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.BFloat16), null, (Work.Forward, null), (Work.Forward, "q4_k"));

    [Fact]
    public void ForwardWithWeightsOffloaded()
    {
        var matrices = FluxFillTiny.Descriptor.Parameters.Where(p => p.Shape.Length >= 2);
        // Half the matrices' float32 bytes: weights stream through the arena, which the count includes.
        long budget = matrices.Sum(p => HostTensor.ElementCount(p.Shape) * sizeof(float)) / 2;
        Compare(IlgpuBackend.CreateCpuSimulator(GpuPrecision.Float32), budget, (Work.Forward, null), (Work.Forward, "fp8"));
    }

    /// <summary>
    /// Flash attention's backward workspace (recomputed output, query gradient, log-sum-exp, row dots) on a simulated
    /// device with warps of 32, as the flash kernels need: one op, as a whole model's step through them is slow there.
    /// </summary>
    [Fact]
    public void FlashAttentionBackwardWorkspace()
    {
        using var simulator = IlgpuBackend.CreateCpuSimulator(
            new CPUDevice(numThreadsPerWarp: TensorCoreMma.WarpLanes, numWarpsPerMultiprocessor: 1, numMultiprocessors: 1), GpuPrecision.BFloat16);
        simulator.AttentionKernel = AttentionKernelChoice.Flash;
        var plan = new MemoryPlanBackend(PlannedDevice.Of(simulator));
        foreach (ITrainingBackend backend in new ITrainingBackend[] { simulator, plan })
        {
            // 2 heads of 32 over 5 queries and 7 keys; q, k and v column slices of one fused tensor as the model has them.
            var tensors = new[] { backend.Allocate([1, 5, 64]), backend.Allocate([1, 7, 128]), backend.Allocate([1, 5, 64]),
                backend.Allocate([1, 5, 64]), backend.Allocate([1, 7, 128]) };
            foreach (var t in tensors) backend.Zero(t);
            var (q, kv, dOut, dq, dkv) = (tensors[0].AsView(), tensors[1].AsView(), tensors[2].AsView(), tensors[3].AsView(), tensors[4].AsView());
            ((IMemoryStatistics)backend).ResetPeak();
            backend.AttentionBackward(dq, dkv.Columns(0, 64), dkv.Columns(64, 64), dOut, q, kv.Columns(0, 64), kv.Columns(64, 64), 2, 0.17f);
            backend.Synchronize();
            foreach (var t in tensors) t.Dispose();
        }
        simulator.LastAttentionBackwardPath.ShouldBe("flash");
        plan.PeakAllocatedBytes.ShouldBe(simulator.PeakAllocatedBytes);
        plan.PeakAllocatedBytes.ShouldBeGreaterThan(5L * 64 * sizeof(float) * 2);
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
        }
    }

    private static (long WeightBytes, long Peak) Measure(IBackend backend, Runtime.Models.CompiledModelInfo info, Work work, BasePrecision? basePrecision,
        Func<Runtime.Models.ModelDescriptor, IReadOnlyDictionary<string, DeviceTensor>>? place)
    {
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
        long stepPeak = MemoryPlan.LoraStepPeak(backend, settings, work == Work.LoraStepRecompute, place, out long weightBytes, steps: 1);
        return (weightBytes, stepPeak);
    }
}
