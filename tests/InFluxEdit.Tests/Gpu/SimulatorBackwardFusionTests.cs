using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Training;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The backward kernels the generator fuses (FluxFillTiny's FusedKernels.*Backward*) against the backward ops they
/// stand for, on the simulator, at sizes other than the model's; then a whole tiny FLUX training step with the fused
/// backward against the CPU backend's unfused one. The element-wise arithmetic is the unfused kernels'; only the
/// grouping of the row reductions (the launcher picks its own thread group) and of the per-sample sums over tokens
/// (chunked by FusedKernelLauncher.SumRows, not by the backend) may differ, so results agree to rounding.
/// </summary>
public sealed class SimulatorBackwardFusionTests(SimulatorBackendFixture fixture, ITestOutputHelper output) : IClassFixture<SimulatorBackendFixture>
{
    private const double Tolerance = 1e-6;
    private IlgpuBackend Backend => fixture.Backend;
    private FusedKernelLauncher Fused => FusedKernelLauncher.For(Backend)!;

    private SimulatorTensors Tensors => new(Backend);
    private DeviceTensor Random(Random random, params int[] shape) => Tensors.Random(random, shape);
    private DeviceTensor Copy(DeviceTensor tensor) => Tensors.Copy(tensor);

    private void ShouldMatch(DeviceTensor fused, DeviceTensor unfused, string what)
    {
        double error = TensorComparison.RelativeL2(Backend.Download(fused, fused.Shape).Data, Backend.Download(unfused, unfused.Shape).Data);
        Assert.True(error <= Tolerance, $"{what}: fused and unfused differ by {error:E2} (relative L2)");
    }

    [Theory]
    [InlineData(1, 3, 64)]
    [InlineData(2, 5, 40)] // a row wider than the simulator's 16-thread groups, not a power of two
    public void ModulateLayerNormGatedResidualBackwardMatchesItsOps(int batch, int tokens, int features)
    {
        // A double block's stream: y = modulate(layer_norm(x)); the gradient reaching y, added into x's (the residual
        // stream's, already holding the later gated residual's), then through x = residual + gate·branch.
        var random = new Random(21);
        using var dy = Random(random, batch, tokens, features);
        using var x = Random(random, batch, tokens, features);
        using var normed = Random(random, batch, tokens, features);
        using var branch = Random(random, batch, tokens, features);
        using var scale = Random(random, batch, features);
        using var gate = Random(random, batch, features);
        using var dStream = Random(random, batch, tokens, features);
        using var dStreamCopy = Copy(dStream);
        using var dBranch = Backend.Allocate([batch, tokens, features]);
        using var dShift = Backend.Allocate([batch, features]);
        using var dScale = Backend.Allocate([batch, features]);
        using var dGate = Backend.Allocate([batch, features]);
        using var reference = Backend.Allocate([batch, tokens, features]);
        using var normedGradient = Backend.Allocate([batch, tokens, features]);
        using var referenceBranch = Backend.Allocate([batch, tokens, features]);
        using var referenceShift = Backend.Allocate([batch, features]);
        using var referenceScale = Backend.Allocate([batch, features]);
        using var referenceGate = Backend.Allocate([batch, features]);
        View Over(DeviceTensor vector) => View.Of(vector).BroadcastRows(tokens);

        Fused.Launch(FluxFillTiny.FusedKernels.ModulateLayerNormGatedResidualBackward17, dy, features, 1,
            dy, Over(scale), x, dStream, Over(gate), dBranch);
        Fused.SumRows(new FusedColumnSum(dShift, dy, null, 0f), new FusedColumnSum(dScale, dy, normed, 0f), new FusedColumnSum(dGate, dStream, branch, 0f));

        Backend.ModulateBackward(normedGradient, referenceShift, referenceScale, dy, normed, Over(scale));
        Backend.LayerNormBackward(reference, normedGradient, x, 1e-6f);
        Backend.Add(dStreamCopy, dStreamCopy, reference);
        Backend.GatedResidualBackward(referenceBranch, referenceGate, dStreamCopy, branch, Over(gate));

        ShouldMatch(dStream, dStreamCopy, "residual stream gradient");
        ShouldMatch(dBranch, referenceBranch, "branch gradient");
        ShouldMatch(dShift, referenceShift, "shift gradient");
        ShouldMatch(dScale, referenceScale, "scale gradient");
        ShouldMatch(dGate, referenceGate, "gate gradient");
    }

    [Theory]
    [InlineData(1, 3, 2)]
    [InlineData(2, 5, 3)]
    public void RopeRmsNormBackwardAddsIntoAColumnSliceOfTheProjectionsGradient(int batch, int tokens, int heads)
    {
        // FluxFillTiny's head: 32 columns, 16 pairs; k's gradient is a column slice of the fused projection's, as in the model.
        const int HeadDim = 32;
        int width = heads * HeadDim;
        var random = new Random(22);
        using var dy = Random(random, batch, tokens, width);
        using var x = Random(random, batch, tokens, width);
        using var scale = Random(random, HeadDim);
        using var pe = Random(random, batch, tokens, HeadDim / 2 * 4);
        using var dProjection = Random(random, batch, tokens, 3 * width);
        using var dProjectionCopy = Copy(dProjection);
        using var rotated = Backend.Allocate([batch, tokens, width]);
        using var normed = Backend.Allocate([batch, tokens, width]);
        var slice = View.Of(dProjection).Columns(width, width);
        var referenceSlice = View.Of(dProjectionCopy).Columns(width, width);

        Fused.Launch(FluxFillTiny.FusedKernels.RopeRmsNormBackward11, dy, HeadDim, 2, dy, pe, x, scale, slice);
        Backend.ApplyRopeBackward(rotated, dy, pe, HeadDim);
        Backend.RmsNormBackward(normed, rotated, x, scale, HeadDim, 1e-6f);
        Backend.Add(referenceSlice, referenceSlice, normed);

        ShouldMatch(dProjection, dProjectionCopy, "projection gradient"); // the other columns untouched as well
    }

    [Fact]
    public void SumRowsAddsIntoItsTargetWithBetaOne()
    {
        var random = new Random(23);
        using var dy = Random(random, 2, 7, 24);
        using var factor = Random(random, 2, 7, 24);
        using var target = Random(random, 2, 24);
        using var reference = Copy(target);
        using var dx = Backend.Allocate([2, 7, 24]);
        using var sums = Backend.Allocate([2, 24]);
        using var ones = Backend.Upload(new HostTensor([2, 24], Enumerable.Repeat(1f, 48).ToArray()));

        Fused.SumRows(new FusedColumnSum(target, dy, factor, 1f));
        // Σ dy·x per sample is the gate gradient of a gated residual; the reference adds it after.
        Backend.GatedResidualBackward(dx, sums, dy, factor, View.Of(ones).BroadcastRows(7));
        Backend.Add(reference, reference, sums);

        ShouldMatch(target, reference, "accumulated sums");
    }

    [Fact]
    public void TinyFluxTrainingStepWithFusedBackwardMatchesTheCpuBackend()
    {
        var info = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");
        var inputs = BenchInputs.Create(info.Descriptor, batch: 2, imageTokens: 5, textTokens: 3);
        var adapters = new[] { ("double_blocks.0.img_attn.qkv", 192, 64), ("double_blocks.1.txt_mlp.0", 256, 64), ("single_blocks.0.linear1", 448, 64) };
        (float[] Output, Dictionary<string, float[]> Gradients, long Calls) Step(IBackend inner)
        {
            var backend = new CountingBackend(inner, profile: true);
            var weights = RandomWeights.Upload(info.Descriptor, backend, seed: 12);
            try
            {
                backend.ResetCount();
                var (result, gradients) = TinyFluxTrainingStep.Run(backend, weights, adapters, inputs);
                return (result, gradients, backend.Profile.Values.Sum(p => (long)p.Calls));
            }
            finally
            {
                foreach (var tensor in weights.Values) tensor.Dispose();
            }
        }

        long before = Fused.Launches;
        var simulated = Step(Backend);
        long fusedLaunches = Fused.Launches - before;
        using var cpu = new CpuBackend();
        var reference = Step(cpu);

        foreach (var (name, expected) in reference.Gradients)
        {
            double error = TensorComparison.RelativeL2(simulated.Gradients[name], expected);
            Assert.True(error <= 1e-5, $"{name}: fused simulator gradient differs from the CPU backend's by {error:E2} (relative L2)");
        }
        // Per step: one kernel per group, and two for the per-sample sums of each group that has a modulate. Groups: the
        // final layer's and each single block's modulate > LayerNorm, each single block's RoPE > RMSNorm for q and k, and
        // per double block and stream the MLP's modulate > LayerNorm > gated residual and the attention's modulate >
        // LayerNorm (FluxFillTiny: 2 + 2 blocks, 15 groups, 11 of them with sums).
        Assert.Equal(15 + 2 * 11, fusedLaunches);
        output.WriteLine($"tiny FLUX training step, ops and kernels launched: {reference.Calls} unfused (CPU backend), {simulated.Calls} with the fused backward (simulator)");
        Assert.True(simulated.Calls < reference.Calls, $"the fused step launched {simulated.Calls}, the unfused {reference.Calls}");
    }
}
