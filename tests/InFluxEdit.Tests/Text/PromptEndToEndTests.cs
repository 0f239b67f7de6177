using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Text;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Images;
using Shouldly;

namespace InFluxEdit.Tests.Text;

/// <summary>
/// Prompts in-process on the tiny models: the golden CLIP and T5 encoders with their tokenizers (the project's byte-level
/// CLIP vocabulary, without merges, fits the tiny CLIP's 1000 rows), a toy transformer with seeded weights that
/// reads their widths, and the golden tiny VAE. No precomputed embeddings anywhere.
/// </summary>
public sealed class PromptEndToEndTests
{
    private static string ClipTokenizerFolder(TempDir dir)
    {
        string folder = dir.File("clip-tokenizer");
        ToyTokenizers.WriteClip(folder);
        return folder;
    }

    private static string ToyTransformer(TempDir dir)
    {
        string path = dir.File("toy.safetensors");
        RandomWeights.Write(ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-toy").Descriptor, path, seed: 3);
        return path;
    }

    private static T WithEncoders<T>(T options, TempDir dir) where T : TextEncoderOptions
    {
        options.Clip = TestPaths.Golden("clip-tiny.safetensors");
        options.T5 = TestPaths.Golden("t5-tiny.safetensors");
        options.ClipTokenizer = Directory.Exists(dir.File("clip-tokenizer")) ? dir.File("clip-tokenizer") : ClipTokenizerFolder(dir);
        options.T5Tokenizer = TestPaths.Golden("spm-tiny.model");
        options.T5Length = 16;
        options.Device = "cpu";
        return options;
    }

    [Fact]
    public void Edit_takes_a_prompt_encodes_it_once_and_a_new_prompt_changes_the_edit()
    {
        using var dir = new TempDir();
        string weights = ToyTransformer(dir);
        EditOptions Edit(string prompt, string output) => WithEncoders(new EditOptions
        {
            Weights = weights,
            Vae = TestPaths.Golden("vae-tiny.safetensors"),
            Input = TestPaths.Golden("methods-tiny-source.png"),
            Prompt = prompt,
            TextCache = dir.File("text-cache"),
            Steps = 2,
            Seed = 5,
            Output = dir.File(output),
        }, dir);

        var first = new StringWriter();
        EditCommand.Run(Edit("violet circle with orange background", "a.png"), first, ModelCatalog.All).ShouldBe(0, first.ToString());
        first.ToString().ShouldContain("1 encoded");
        var again = new StringWriter();
        EditCommand.Run(Edit("violet circle with orange background", "b.png"), again, ModelCatalog.All).ShouldBe(0, again.ToString());
        again.ToString().ShouldContain("1 from the cache");
        again.ToString().ShouldNotContain("clip:");
        var other = new StringWriter();
        EditCommand.Run(Edit("green circle with blue background", "c.png"), other, ModelCatalog.All).ShouldBe(0, other.ToString());
        other.ToString().ShouldContain("1 encoded");

        ImageFile.LoadRgb(dir.File("b.png")).Data.ShouldBe(ImageFile.LoadRgb(dir.File("a.png")).Data);
        ImageFile.LoadRgb(dir.File("c.png")).Data.ShouldNotBe(ImageFile.LoadRgb(dir.File("a.png")).Data);
        Directory.GetFiles(dir.File("text-cache")).Length.ShouldBe(2);
    }

    [Fact]
    public void The_encoders_output_is_what_the_encoders_give_for_the_tokenized_prompt()
    {
        using var dir = new TempDir();
        var options = WithEncoders(new EditOptions(), dir);
        var files = TextEncoderFiles.Resolve(null, options.Clip, options.T5, options.ClipTokenizer, options.T5Tokenizer);
        using var backend = new CpuBackend();
        using var encoder = PromptEncoder.Load(files, 16, backend, ModelCatalog.All, TextWriter.Null);
        var encoded = encoder.Encode("a red circle");
        encoded.Txt.Shape.ShouldBe([1, 16, 32]);
        encoded.Vec.Shape.ShouldBe([1, 48]);
        encoder.Encode("a red circle").Txt.Data.ShouldBe(encoded.Txt.Data);
        encoder.Encode("a blue circle").Vec.Data.ShouldNotBe(encoded.Vec.Data);
    }

    [Fact]
    public void Train_encodes_each_caption_once_and_learns_without_precomputed_embeddings()
    {
        using var dir = new TempDir();
        string data = dir.File("circles");
        DatasetCommand.Run(new DatasetOptions { Kind = "circles", Output = data, Count = 3, HeldOut = 0, Size = 32, Seed = 2 }).ShouldBe(0);
        var log = new StringWriter();
        var options = WithEncoders(new TrainOptions
        {
            Weights = ToyTransformer(dir),
            Vae = TestPaths.Golden("vae-tiny.safetensors"),
            Data = Path.Combine(data, "train"),
            Method = EditMethod.Channel,
            Output = dir.File("out"),
            Steps = 2,
            Rank = 2,
            Resolution = "32",
        }, dir);

        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        log.ToString().ShouldContain("3 distinct prompt(s), 0 from the cache");
        Directory.GetFiles(Path.Combine(options.Output, "cache", "text")).Length.ShouldBe(3);
        File.Exists(TrainCommand.LoraPath(options)).ShouldBeTrue();
    }

    [Fact]
    public void Edit_reads_everything_from_a_flux_model_folder()
    {
        using var dir = new TempDir();
        string root = dir.File("FLUX.1-Fill-toy");
        foreach (string folder in new[] { "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2" })
            Directory.CreateDirectory(Path.Combine(root, folder));
        File.Move(ToyTransformer(dir), Path.Combine(root, "flux1-fill-dev.safetensors"));
        File.Copy(TestPaths.Golden("vae-tiny.safetensors"), Path.Combine(root, "ae.safetensors"));
        File.Copy(TestPaths.Golden("clip-tiny.safetensors"), Path.Combine(root, "text_encoder", "model.safetensors"));
        File.Copy(TestPaths.Golden("t5-tiny.safetensors"), Path.Combine(root, "text_encoder_2", "model-00001-of-00001.safetensors"));
        foreach (string file in Directory.GetFiles(ClipTokenizerFolder(dir)))
            File.Copy(file, Path.Combine(root, "tokenizer", Path.GetFileName(file)));
        File.Copy(TestPaths.Golden("spm-tiny.model"), Path.Combine(root, "tokenizer_2", "spiece.model"));

        var log = new StringWriter();
        var options = new EditOptions
        {
            FluxDir = root,
            Input = TestPaths.Golden("methods-tiny-source.png"),
            Prompt = "yellow circle with cyan background",
            TextCache = dir.File("text-cache"),
            T5Length = 16,
            Steps = 1,
            Seed = 1,
            Output = dir.File("out.png"),
            Device = "cpu",
        };
        EditCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        log.ToString().ShouldContain("flux-fill-toy");
        log.ToString().ShouldContain("clip: clip-tiny");
        File.Exists(options.Output).ShouldBeTrue();
    }

    [Fact]
    public void A_flux_folder_with_several_checkpoints_asks_which_one()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("flux1-fill-dev-fp8.safetensors"), "x");
        File.WriteAllText(dir.File("flux1-fill-dev-q8.safetensors"), "x");
        File.WriteAllText(dir.File("ae.safetensors"), "x");
        var error = Should.Throw<ArgumentException>(() => FluxModelFolder.Transformer(dir.Path));
        error.Message.ShouldContain("--weights");
        error.Message.ShouldContain("flux1-fill-dev-q8.safetensors");
        FluxModelFolder.Autoencoder(dir.Path).ShouldBe(dir.File("ae.safetensors"));
    }

    [Fact]
    public void A_tokenizer_larger_than_the_encoders_vocabulary_is_refused()
    {
        using var dir = new TempDir();
        var options = WithEncoders(new EditOptions(), dir);
        var files = TextEncoderFiles.Resolve(null, options.Clip, options.T5, TestPaths.Golden("tokenizers/clip"), options.T5Tokenizer);
        using var backend = new CpuBackend();
        var error = Should.Throw<InvalidDataException>(() => PromptEncoder.Load(files, 16, backend, ModelCatalog.All, TextWriter.Null));
        error.Message.ShouldContain("49408 tokens");
        error.Message.ShouldContain("clip-tiny");
    }
}
