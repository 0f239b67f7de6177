using InFluxEdit.Fill;
using InFluxEdit.Parity;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using Shouldly;

namespace InFluxEdit.Tests.Fill;

/// <summary>
/// The VAE-dependent golden cases through the parity runner (Parity/ForwardParityTests runs every supported case
/// for tolerance; these pin which tensors each case checks). Fail until the compiled VAE lands.
/// </summary>
public class FillParityTests
{
    [Theory]
    [InlineData("methods-tiny-case", new[] { "channel.img_cond", "channel.x0", "channel.img_ids", "concat.img_cond", "concat.x0", "concat.img_ids" })]
    [InlineData("vae-tiny-case", new[] { "z", "decoded" })]
    [InlineData("fill-tiny-case", new[] { "img", "img_ids", "img_cond", "timesteps", "latent", "unpacked", "image" })]
    public void CaseChecksEveryExpectedTensorAndPasses(string caseName, string[] tensors)
    {
        FillGolden.RequireCompiledVae();
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find(caseName)!, outDir: null);

        rows.Select(r => r.Tensor).ShouldBe(tensors, ignoreOrder: true);
        rows.Where(r => r.Status != ParityStatus.Passed).Select(r => $"{r.Tensor}: {r.Error:E2} > {r.Tolerance:E0} {r.Note}").ShouldBeEmpty();
    }

    [Theory]
    [InlineData("methods-tiny-case")]
    [InlineData("vae-tiny-case")]
    [InlineData("fill-tiny-case")]
    public void WithoutACompiledVaeTheCaseIsSkippedWithTheReason(string caseName)
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var withoutVae = ModelCatalog.All.Where(m => m.Descriptor.Family != VaeCodec.Family).ToList();
        var row = new ParityRunner(manifest, backend, withoutVae).Run(manifest.Find(caseName)!, outDir: null).ShouldHaveSingleItem();
        row.Status.ShouldBe(ParityStatus.Skipped);
        row.Note.ShouldNotBeNull().ShouldContain("flux-vae");
    }

    [Fact]
    public void SchedulesCaseComparesEveryList()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find("schedules")!, outDir: null);
        rows.Select(r => r.Tensor).ShouldBe(new[] { "1x256", "4x12", "28x4096", "50x1024", "20x4080", "30x1", "28x4096_noshift" }, ignoreOrder: true);
        rows.ShouldAllBe(r => r.Status == ParityStatus.Passed && r.Tolerance == 1e-6);
    }
}
