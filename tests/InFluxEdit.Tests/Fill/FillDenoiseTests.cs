using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Sampling;
using Shouldly;

namespace InFluxEdit.Tests.Fill;

/// <summary>
/// The sampler with the compiled tiny transformer against the reference's denoised latent, starting from the
/// reference's own packed noise and img_cond: the part of the fill pipeline that needs no VAE.
/// </summary>
public class FillDenoiseTests
{
    [Fact]
    public void FourStepsFromTheReferenceNoiseReachTheReferenceLatent()
    {
        const string caseFile = "fill-tiny-case.safetensors";
        using var backend = new CpuBackend();
        using var transformer = LoadedModel.Load(TestPaths.Golden("flux-tiny.safetensors"), FillTransformer.Family, backend, ModelCatalog.All);
        var condition = new FillCondition(FillGolden.Read(caseFile, "expected.img_cond"), FillGolden.Read(caseFile, "expected.img_ids"), 6, 8);
        var text = new TextConditioning(FillGolden.Read(caseFile, "txt"), FillGolden.Read(caseFile, "vec"));
        var schedule = FlowMatchSchedule.Shifted(4, condition.Tokens);

        var latent = new FillTransformer(transformer.Model).Denoise(FillGolden.Read(caseFile, "expected.img"), condition, text, schedule, 30.0);

        TensorComparison.RelativeL2(schedule.Select(t => (float)t).ToArray(), FillGolden.Read(caseFile, "expected.timesteps").Data)
            .ShouldBeLessThan(1e-6);
        TensorComparison.RelativeL2(latent.Data, FillGolden.Read(caseFile, "expected.latent").Data).ShouldBeLessThan(1e-4);
    }
}
