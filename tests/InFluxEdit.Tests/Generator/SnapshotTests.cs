using Shouldly;

namespace InFluxEdit.Tests.Generator;

/// <summary>
/// Pins the generated code. A generator or graph change fails here until the new text is reviewed and
/// approved (copy the .received file over the .approved one).
/// </summary>
public class SnapshotTests
{
    [Fact]
    public void TinyFluxModelMatchesApprovedCode()
    {
        var result = GeneratorHarness.Run(GeneratorHarness.RepoSchemas("flux-fill-tiny.json", "graphs/flux-transformer.json"));

        result.Diagnostics.ShouldBeEmpty();
        var source = result.GeneratedSources.Single(s => s.HintName == "FluxFillTiny.g.cs").SourceText.ToString();
        source.ShouldMatchApproved(options => options.SubFolder("Approved").WithDiscriminator("FluxFillTiny").NoDiff());
    }

    [Fact]
    public void TinyVaeMatchesApprovedCode()
    {
        var result = GeneratorHarness.Run(GeneratorHarness.RepoSchemas("flux-vae-tiny.json", "graphs/flux-vae.json"));

        result.Diagnostics.ShouldBeEmpty();
        var source = result.GeneratedSources.Single(s => s.HintName == "FluxVaeTiny.g.cs").SourceText.ToString();
        source.ShouldMatchApproved(options => options.SubFolder("Approved").WithDiscriminator("FluxVaeTiny").NoDiff());
    }

    [Theory]
    [InlineData("clip-tiny.json", "graphs/clip-text.json", "ClipTiny")]
    [InlineData("t5-tiny.json", "graphs/t5-encoder.json", "T5Tiny")]
    public void TinyTextEncodersMatchApprovedCode(string model, string graph, string className)
    {
        var result = GeneratorHarness.Run(GeneratorHarness.RepoSchemas(model, graph));

        result.Diagnostics.ShouldBeEmpty();
        var source = result.GeneratedSources.Single(s => s.HintName == className + ".g.cs").SourceText.ToString();
        source.ShouldMatchApproved(options => options.SubFolder("Approved").WithDiscriminator(className).NoDiff());
    }

    [Fact]
    public void CatalogListsEveryModel()
    {
        var result = GeneratorHarness.Run(GeneratorHarness.RepoSchemas(
            "flux-fill-tiny.json", "flux-fill-dev.json", "graphs/flux-transformer.json", "flux-vae-tiny.json", "graphs/flux-vae.json"));

        result.Diagnostics.ShouldBeEmpty();
        var catalog = result.GeneratedSources.Single(s => s.HintName == "ModelCatalog.g.cs").SourceText.ToString();
        catalog.ShouldMatchApproved(options => options.SubFolder("Approved").WithDiscriminator("ModelCatalog").NoDiff());
    }
}
