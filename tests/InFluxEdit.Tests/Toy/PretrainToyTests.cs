using InFluxEdit.Training;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Toy;

/// <summary>
/// pretrain-toy and demo end to end at a few steps each: every stage runs, writes a model folder that --flux-dir
/// reads (recognised models, tokenizers, manifest with hashes), keeps finished stages on a rerun, and demo trains and
/// scores a LoRA on it. How good the toy gets is a matter of steps, not of these plumbing checks.
/// </summary>
public sealed class PretrainToyTests
{
    [Fact]
    public void Pretrain_toy_writes_a_flux_model_folder_that_demo_trains_a_lora_on()
    {
        using var dir = new TempDir();
        string toy = dir.File("toy");
        var options = new PretrainToyOptions
        {
            Output = toy, Work = dir.File("work"), Scenes = 8, Size = 32, VaeSteps = 2, VaeFullSizeSteps = 2, Steps = 3, AspectSteps = 2, Device = "cpu",
        };
        var log = new StringWriter();
        PretrainToyCommand.Run(options, log).ShouldBe(0, log.ToString());

        foreach (string file in new[] { ToyBase.TransformerFile, FluxModelFolder.AutoencoderFile, "text_encoder/model.safetensors",
                     "text_encoder_2/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/spiece.model", "toy.json" })
            File.Exists(Path.Combine(toy, file)).ShouldBeTrue(file);
        File.ReadAllText(Path.Combine(toy, "toy.json")).ShouldContain(ToyBase.TransformerFile);
        log.ToString().ShouldContain("reconstruction steps at 16×16");
        log.ToString().ShouldContain("reconstruction steps at 32×32");
        log.ToString().ShouldContain("latents: mean");
        log.ToString().ShouldContain("2 inpainting steps on 32×32, 64×32 and 32×64 scenes");
        foreach (string weights in new[] { ToyBase.TransformerFile, FluxModelFolder.AutoencoderFile })
        {
            using var file = InFluxEdit.Runtime.SafeTensors.SafeTensorsFile.Open(Path.Combine(toy, weights));
            file.Metadata["pretrain_toy"].ShouldContain("\"VaeFullSizeSteps\":2");
            file.Metadata["pretrain_toy"].ShouldContain("\"AspectSteps\":2");
            file.Metadata.ShouldContainKey("config");
        }
        FluxModelFolder.Transformer(toy).ShouldBe(Path.Combine(toy, ToyBase.TransformerFile));

        var again = new StringWriter();
        var before = File.GetLastWriteTimeUtc(Path.Combine(toy, FluxModelFolder.AutoencoderFile));
        PretrainToyCommand.Run(options, again).ShouldBe(0);
        again.ToString().ShouldNotContain("== autoencoder");
        File.GetLastWriteTimeUtc(Path.Combine(toy, FluxModelFolder.AutoencoderFile)).ShouldBe(before);

        var demo = new StringWriter();
        DemoCommand.Run(new DemoOptions { FluxDir = toy, Output = dir.File("demo"), Steps = 2, Count = 2, HeldOut = 2, Size = 32, Device = "cpu" }, demo)
            .ShouldBe(0, demo.ToString());
        demo.ToString().ShouldContain("held-out edits with the colours their captions name:");
        File.Exists(Path.Combine(dir.File("demo"), "run", "validation", "step-000002", "contact-sheet.png")).ShouldBeTrue();
    }
}
