using InFluxEdit.Cli.Commands;
using InFluxEdit.Datasets;
using InFluxEdit.Models;
using InFluxEdit.Tests.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>A shortened compare on the golden tiny models: every variant trains, edits and is scored.</summary>
public class CompareCommandTests
{
    [Fact]
    public void Compare_trains_each_variant_and_scores_the_held_out_edits()
    {
        using var dir = new TempDir();
        string data = dir.File("circles");
        DatasetCommand.Run(new DatasetOptions { Kind = "circles", Output = data, Count = 2, HeldOut = 2, Size = 32, Seed = 4 }).ShouldBe(0);
        var log = new StringWriter();
        var options = new CompareOptions
        {
            Data = data,
            Base = TestPaths.Golden("flux-tiny.safetensors"),
            Vae = TestPaths.Golden("vae-tiny.safetensors"),
            TextEmbeddings = FillGolden.WriteTextEmbeddings(dir),
            Output = dir.File("compare"),
            Steps = 2,
            Rank = 2,
            EditSteps = 2,
            Device = "cpu",
        };

        CompareCommand.Run(options, log, ModelCatalog.All, out var scores).ShouldBe(0, log.ToString());

        scores.Select(s => s.Name).ShouldBe(["base (channel, no LoRA)", "concat", "channel", "channel+img-in"]);
        foreach (var score in scores)
        {
            double.IsFinite(score.Psnr).ShouldBeTrue(score.Name);
            score.Ssim.ShouldBeInRange(-1, 1, score.Name);
            score.BothAccuracy.ShouldNotBeNull(score.Name);
            score.BothAccuracy!.Value.ShouldBeInRange(0, 1);
        }
        foreach (string variant in new[] { "concat", "channel", "channel+img-in" })
            Directory.EnumerateFiles(Path.Combine(options.Output, variant), "lora-*.safetensors").ShouldHaveSingleItem(variant);
        File.ReadAllText(Path.Combine(options.Output, "compare.md")).ShouldContain("| channel+img-in |");
        File.Exists(Path.Combine(options.Output, "compare.png")).ShouldBeTrue();
    }

    [Fact]
    public void An_unknown_variant_is_refused_before_any_training()
    {
        var error = Should.Throw<ArgumentException>(() => CompareCommand.Run(
            new CompareOptions { Data = "unused", Base = "unused", Vae = "unused", Output = "unused", Variants = "channel,sideways" },
            TextWriter.Null, ModelCatalog.All, out _));
        error.Message.ShouldContain("sideways");
    }
}
