using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The kernels the generator fuses (FluxFillTiny's and T5Tiny's FusedKernels) against the op sequences they replace,
/// both on the simulator: each group kind at sizes other than the model's, then a whole tiny FLUX forward with fusion
/// against the CPU backend. Fused LayerNorm chains reduce in the unfused kernel's order; RMSNorm → RoPE reduces pairs
/// per thread, so only rounding may differ.
/// </summary>
public sealed class SimulatorFusionTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    private const double Tolerance = 1e-6;
    private IlgpuBackend Backend => fixture.Backend;
    private FusedKernelLauncher Fused => FusedKernelLauncher.For(Backend)!;

    private SimulatorTensors Tensors => new(Backend);
    private DeviceTensor Random(Random random, params int[] shape) => Tensors.Random(random, shape);
    private DeviceTensor Copy(DeviceTensor tensor) => Tensors.Copy(tensor);

    private void ShouldMatch(View fused, View unfused)
    {
        int[] shape = [fused.Batch, fused.Rows, fused.Cols];
        double error = TensorComparison.RelativeL2(Backend.Download(fused, shape).Data, Backend.Download(unfused, shape).Data);
        Assert.True(error <= Tolerance, $"fused and unfused differ by {error:E2} (relative L2)");
    }

    [Theory]
    [InlineData(1, 3, 64)]
    [InlineData(2, 5, 40)] // a segment wider than the simulator's 16-thread groups, not a power of two
    public void LayerNormModulateMatchesItsOps(int batch, int tokens, int features)
    {
        var random = new Random(1);
        using var x = Random(random, batch, tokens, features);
        using var shift = Random(random, batch, features);
        using var scale = Random(random, batch, features);
        using var fused = Backend.Allocate([batch, tokens, features]);
        using var unfused = Backend.Allocate([batch, tokens, features]);
        View Over(DeviceTensor vector) => View.Of(vector).BroadcastRows(tokens);

        Fused.Launch(FluxFillTiny.FusedKernels.LayerNormModulate2, fused, features, 1, fused, x, Over(shift), Over(scale));
        Backend.LayerNorm(unfused, x, 1e-6f);
        Backend.Modulate(unfused, unfused, Over(shift), Over(scale));

        ShouldMatch(fused, unfused);
    }

    [Theory]
    [InlineData(1, 2, 64)]
    [InlineData(2, 3, 48)]
    public void GatedResidualLayerNormModulateWritesTheStreamAndTheNormedValue(int batch, int tokens, int features)
    {
        var random = new Random(2);
        using var residual = Random(random, batch, tokens, features);
        using var residualCopy = Copy(residual);
        using var x = Random(random, batch, tokens, features);
        using var gate = Random(random, batch, features);
        using var shift = Random(random, batch, features);
        using var scale = Random(random, batch, features);
        using var fused = Backend.Allocate([batch, tokens, features]);
        using var unfused = Backend.Allocate([batch, tokens, features]);
        View Over(DeviceTensor vector) => View.Of(vector).BroadcastRows(tokens);

        Fused.Launch(FluxFillTiny.FusedKernels.GatedResidualLayerNormModulate4, residual, features, 1,
            residual, fused, residual, x, Over(gate), Over(shift), Over(scale));
        Backend.GatedResidual(residualCopy, residualCopy, x, Over(gate));
        Backend.LayerNorm(unfused, residualCopy, 1e-6f);
        Backend.Modulate(unfused, unfused, Over(shift), Over(scale));

        ShouldMatch(residual, residualCopy);
        ShouldMatch(fused, unfused);
    }

    [Theory]
    [InlineData(1, 3, 2)]
    [InlineData(2, 4, 3)]
    public void RmsNormRopeMatchesItsOpsOnAColumnSlice(int batch, int tokens, int heads)
    {
        // FluxFillTiny's head: 32 columns, RoPE over 16 pairs; q is a column slice of a fused qkv, as in the model.
        const int HeadDim = 32;
        int width = heads * HeadDim;
        var random = new Random(3);
        using var qkv = Random(random, batch, tokens, 3 * width);
        using var qkvCopy = Copy(qkv);
        using var scale = Random(random, HeadDim);
        using var pe = Random(random, batch, tokens, HeadDim / 2 * 4);
        var q = View.Of(qkv).Columns(0, width);
        var reference = View.Of(qkvCopy).Columns(0, width);

        Fused.Launch(FluxFillTiny.FusedKernels.RmsNormRope7, q, HeadDim, 2, q, q, scale, pe);
        Backend.RmsNorm(reference, reference, scale, HeadDim, 1e-6f);
        Backend.ApplyRope(reference, reference, pe, HeadDim);

        ShouldMatch(qkv, qkvCopy); // the other columns untouched as well
    }

    [Fact]
    public void AddChainOfPerSampleVectorsMatchesItsOps()
    {
        var random = new Random(4);
        using var vec = Random(random, 3, 64);
        using var vecCopy = Copy(vec);
        using var a = Random(random, 3, 64);
        using var b = Random(random, 3, 64);

        Fused.Launch(FluxFillTiny.FusedKernels.AddAdd1, vec, 64, 1, vec, vec, a, b);
        Backend.Add(vecCopy, vecCopy, a);
        Backend.Add(vecCopy, vecCopy, b);

        ShouldMatch(vec, vecCopy);
    }

    [Fact]
    public void AProfilingBackendLaunchesTheFusedKernelsAndTimesEach()
    {
        var counting = new CountingBackend(Backend, profile: true);
        var launcher = FusedKernelLauncher.For(counting);
        Assert.NotNull(launcher);
        using var vec = Backend.Allocate([1, 64]);
        long before = Fused.Launches;

        launcher.Launch(FluxFillTiny.FusedKernels.AddAdd1, vec, 64, 1, vec, vec, vec, vec);

        Assert.Equal(1, Fused.Launches - before);
        Assert.Equal(1, counting.Profile[nameof(FluxFillTiny.FusedKernels.AddAdd1)].Calls);
        Assert.Null(FusedKernelLauncher.For(new CountingBackend(new CpuBackend())));
    }

    [Fact]
    public void T5ResidualAddThenRmsNormMatchesItsOps()
    {
        var random = new Random(5);
        using var h = Random(random, 2, 5, 32);
        using var hCopy = Copy(h);
        using var attn = Random(random, 2, 5, 32);
        using var scale = Random(random, 32);
        using var fused = Backend.Allocate([2, 5, 32]);
        using var unfused = Backend.Allocate([2, 5, 32]);

        Fused.Launch(T5Tiny.FusedKernels.AddRmsNorm1, h, 32, 1, h, fused, h, attn, scale);
        Backend.Add(hCopy, hCopy, attn);
        Backend.RmsNorm(unfused, hCopy, scale, 32, 1e-6f);

        ShouldMatch(h, hCopy);
        ShouldMatch(fused, unfused);
    }

    [Fact]
    public void TinyFluxForwardWithFusionMatchesTheCpuBackend()
    {
        var info = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");
        var inputs = BenchInputs.Create(info.Descriptor, batch: 1, imageTokens: 4, textTokens: 3);
        HostTensor Forward(IBackend backend)
        {
            var weights = RandomWeights.Upload(info.Descriptor, backend, seed: 11);
            var model = info.Create(backend, weights);
            var uploaded = inputs.ToDictionary(p => p.Key, p => backend.Upload(p.Value));
            using var output = model.Run(uploaded).Values.Single();
            var host = backend.Download(output, output.Shape);
            foreach (var tensor in uploaded.Values.Concat(weights.Values)) tensor.Dispose();
            return host;
        }

        long before = Fused.Launches;
        var simulated = Forward(Backend);
        // Per forward: the two vec adds; per double block, LayerNorm → modulate and gated residual → LayerNorm →
        // modulate for each stream; per single block, LayerNorm → modulate and RMSNorm → RoPE for q and k; the final
        // LayerNorm → modulate. FluxFillTiny has 2 + 2 blocks.
        Assert.Equal(1 + 2 * 4 + 2 * 3 + 1, Fused.Launches - before);
        using var cpu = new CpuBackend();
        var reference = Forward(cpu);
        double error = TensorComparison.RelativeL2(simulated.Data, reference.Data);
        Assert.True(error <= 1e-5, $"fused simulator forward differs from the CPU backend by {error:E2} (relative L2)");
    }
}
