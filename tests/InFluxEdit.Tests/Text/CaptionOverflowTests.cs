using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Text;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Text;

/// <summary>Captions the encoders cut are reported, so a prefix that pushes the deciding words out is not silent.</summary>
public class CaptionOverflowTests
{
    [Fact]
    public void The_seed_prefix_overflows_the_toy_encoders_and_is_reported()
    {
        using var dir = new TempDir();
        using var backend = new CpuBackend();
        string toy = Path.Combine(TestPaths.RepoRoot, "models", "toy");
        var (info, _) = LoadedModel.Resolve(Path.Combine(toy, ToyBase.TransformerFile), FillPipeline.TransformerFamily, ModelCatalog.All);
        var log = new StringWriter();
        const string caption = "violet circle with orange background";

        CaptionEncodings.Encode([caption, TrainRecipe.SeedConcatCaptionPrefix + caption], new TextEncoderSettings { FluxDir = toy }, info.Descriptor,
            dir.Path, backend, ModelCatalog.All, log);

        // The toy spells words outside its captions letter by letter: the prefix alone outgrows CLIP's 77 tokens and T5's 16.
        log.ToString().ShouldContain("of 2 prompt(s), 1 overflow CLIP's tokens and 1 T5's 16");
    }
}
