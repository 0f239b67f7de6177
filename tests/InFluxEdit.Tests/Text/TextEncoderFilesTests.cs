using InFluxEdit.Text;
using Shouldly;

namespace InFluxEdit.Tests.Text;

public sealed class TextEncoderFilesTests
{
    private static void Touch(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, "x");
    }

    /// <summary>A FLUX model folder in the Hugging Face layout, T5 in two shards with an index.</summary>
    private static string FluxFolder(TempDir dir)
    {
        string root = dir.File("FLUX.1-Fill-dev");
        Touch(Path.Combine(root, "text_encoder", "model.safetensors"));
        Touch(Path.Combine(root, "text_encoder", "config.json"));
        Touch(Path.Combine(root, "text_encoder_2", "model-00002-of-00002.safetensors"));
        Touch(Path.Combine(root, "text_encoder_2", "model-00001-of-00002.safetensors"));
        Touch(Path.Combine(root, "text_encoder_2", "config.json"));
        File.WriteAllText(Path.Combine(root, "text_encoder_2", "model.safetensors.index.json"),
            """{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}""");
        Touch(Path.Combine(root, "tokenizer", "vocab.json"));
        Touch(Path.Combine(root, "tokenizer", "merges.txt"));
        Touch(Path.Combine(root, "tokenizer_2", "spiece.model"));
        return root;
    }

    [Fact]
    public void A_flux_model_folder_gives_both_encoders_their_shards_configs_and_tokenizers()
    {
        using var dir = new TempDir();
        string root = FluxFolder(dir);
        var files = TextEncoderFiles.Resolve(root, null, null, null, null);
        files.Clip.Files.ShouldBe([Path.Combine(root, "text_encoder", "model.safetensors")]);
        files.Clip.ConfigPath.ShouldBe(Path.Combine(root, "text_encoder", "config.json"));
        files.T5.Files.Select(Path.GetFileName).ShouldBe(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
        files.ClipVocab.ShouldBe(Path.Combine(root, "tokenizer", "vocab.json"));
        files.ClipMerges.ShouldBe(Path.Combine(root, "tokenizer", "merges.txt"));
        files.T5SentencePiece.ShouldBe(Path.Combine(root, "tokenizer_2", "spiece.model"));
    }

    [Fact]
    public void Single_files_override_the_folders_parts()
    {
        using var dir = new TempDir();
        string root = FluxFolder(dir);
        string t5 = dir.File("t5xxl_fp16.safetensors");
        Touch(t5);
        var files = TextEncoderFiles.Resolve(root, null, t5, null, null);
        files.T5.Files.ShouldBe([t5]);
        files.T5.ConfigPath.ShouldBeNull();
    }

    [Fact]
    public void Everything_missing_is_listed_in_one_error()
    {
        using var dir = new TempDir();
        string root = dir.File("empty");
        Touch(Path.Combine(root, "tokenizer", "vocab.json"));
        var error = Should.Throw<FileNotFoundException>(() => TextEncoderFiles.Resolve(root, null, null, null, null));
        error.Message.ShouldContain(Path.Combine(root, "text_encoder"));
        error.Message.ShouldContain(Path.Combine(root, "text_encoder_2"));
        error.Message.ShouldContain(Path.Combine(root, "tokenizer", "merges.txt"));
        error.Message.ShouldContain(Path.Combine(root, "tokenizer_2", "spiece.model"));
        error.Message.ShouldNotContain("vocab.json");
    }

    [Fact]
    public void A_shard_index_that_names_a_missing_file_is_refused_by_name()
    {
        using var dir = new TempDir();
        string root = FluxFolder(dir);
        File.Delete(Path.Combine(root, "text_encoder_2", "model-00002-of-00002.safetensors"));
        var error = Should.Throw<FileNotFoundException>(() => TextEncoderFiles.Resolve(root, null, null, null, null));
        error.Message.ShouldContain("model-00002-of-00002.safetensors");
    }

    [Fact]
    public void The_cache_key_changes_with_the_text_the_length_and_the_encoders()
    {
        string a = CaptionEncodings.CachePath("cache", "encoders-1", 128, "a red circle");
        CaptionEncodings.CachePath("cache", "encoders-1", 128, "a red circle").ShouldBe(a);
        CaptionEncodings.CachePath("cache", "encoders-1", 128, "a blue circle").ShouldNotBe(a);
        CaptionEncodings.CachePath("cache", "encoders-1", 512, "a red circle").ShouldNotBe(a);
        CaptionEncodings.CachePath("cache", "encoders-2", 128, "a red circle").ShouldNotBe(a);
    }
}
