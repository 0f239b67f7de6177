using InFluxEdit.Cli.Commands;
using Shouldly;

namespace InFluxEdit.Tests.Toy;

/// <summary>A model folder made by pretrain-toy sets the defaults that must match its pretraining; any other folder keeps FLUX's.</summary>
public sealed class ToySettingsTests
{
    [Fact]
    public void A_toy_folder_gives_its_t5_length_and_training_guidance_and_the_options_still_win()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("toy.json"), """{ "settings": { "T5Length": 16, "Guidance": 30 } }""");
        var options = new TrainOptions { FluxDir = dir.Path };
        options.PromptLength.ShouldBe(16);
        options.TrainingGuidance(null).ShouldBe(30);
        options.TrainingGuidance(2.5).ShouldBe(2.5);
        new TrainOptions { FluxDir = dir.Path, T5Length = 64 }.PromptLength.ShouldBe(64);
    }

    [Fact]
    public void Any_other_folder_keeps_flux_defaults_and_a_broken_manifest_is_named()
    {
        using var dir = new TempDir();
        var options = new TrainOptions { FluxDir = dir.Path };
        options.PromptLength.ShouldBe(128);
        options.TrainingGuidance(null).ShouldBe(1.0);

        File.WriteAllText(dir.File("toy.json"), "{ not json");
        Should.Throw<InvalidDataException>(() => options.PromptLength).Message.ShouldContain("toy.json");
    }
}
