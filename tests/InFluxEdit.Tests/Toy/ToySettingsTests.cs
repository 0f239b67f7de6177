using InFluxEdit.Cli.Commands;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Toy;

/// <summary>A model folder made by pretrain-toy sets the defaults that must match its pretraining; any other folder keeps FLUX's.</summary>
public sealed class ToySettingsTests
{
    private static TrainRequest Request(string folder, double? guidance = null, int? t5Length = null) =>
        TrainCommand.Request(new TrainOptions { FluxDir = folder, Guidance = guidance, T5Length = t5Length });

    [Fact]
    public void A_toy_folder_gives_its_t5_length_and_training_guidance_and_the_options_still_win()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("toy.json"), """{ "settings": { "T5Length": 16, "Guidance": 30 } }""");
        Request(dir.Path).TextInEffect.PromptLength.ShouldBe(16);
        Request(dir.Path).GuidanceInEffect.ShouldBe(30);
        Request(dir.Path, guidance: 2.5).GuidanceInEffect.ShouldBe(2.5);
        Request(dir.Path, t5Length: 64).TextInEffect.PromptLength.ShouldBe(64);
    }

    [Fact]
    public void Any_other_folder_keeps_flux_defaults_and_a_broken_manifest_is_named()
    {
        using var dir = new TempDir();
        Request(dir.Path).TextInEffect.PromptLength.ShouldBe(128);
        Request(dir.Path).GuidanceInEffect.ShouldBe(1.0);

        File.WriteAllText(dir.File("toy.json"), "{ not json");
        Should.Throw<InvalidDataException>(() => Request(dir.Path).TextInEffect.PromptLength).Message.ShouldContain("toy.json");
    }
}
