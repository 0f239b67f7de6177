using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Models;

public sealed class WeightLoaderTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Loads_every_parameter_with_its_stored_dtype_and_bytes_and_reports_progress()
    {
        List<ParameterInfo> table = CheckpointFiles.TableOf(CheckpointFiles.TinyBf16);
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));
        var backend = new UploadOnlyBackend();
        var progress = new RecordingProgress();

        var weights = WeightLoader.Load(table, [file], backend, progress);

        weights.Count.ShouldBe(table.Count);
        foreach (ParameterInfo parameter in table)
        {
            var stored = (UploadOnlyBackend.StoredWeight)weights[parameter.Name];
            stored.Shape.ShouldBe(parameter.Shape);
            stored.DType.ShouldBe(DType.BF16);
            stored.Bytes.ShouldBe(file.GetBytes(file.GetTensor(parameter.Name)).ToArray());
        }
        progress.Reports.Count.ShouldBe(table.Count);
        progress.Reports[^1].ShouldBe((table.Count, table.Count));
    }

    [Fact]
    public void Weights_split_over_several_files_load_together()
    {
        string blocks = CheckpointFiles.RewriteGolden(_temp.File("blocks.safetensors"), keep: t => t.Name.Contains("blocks."));
        string rest = CheckpointFiles.RewriteGolden(_temp.File("rest.safetensors"), keep: t => !t.Name.Contains("blocks."));
        using var first = SafeTensorsFile.Open(blocks);
        using var second = SafeTensorsFile.Open(rest);

        WeightLoader.Load(CheckpointFiles.TableOf(CheckpointFiles.TinyBf16), [first, second], new UploadOnlyBackend())
            .Count.ShouldBe(first.Tensors.Count + second.Tensors.Count);
    }

    [Fact]
    public void Missing_unexpected_and_misshaped_keys_are_all_reported_in_one_message_before_any_upload()
    {
        List<ParameterInfo> table = CheckpointFiles.TableOf(CheckpointFiles.TinyBf16);
        table.RemoveAll(p => p.Name == "final_layer.linear.bias");
        table.Add(new ParameterInfo("extra_head.weight", [10, 64], DType.BF16));
        int imgIn = table.FindIndex(p => p.Name == "img_in.weight");
        table[imgIn] = table[imgIn] with { Shape = [64, 64] };
        string path = TestPaths.Golden(CheckpointFiles.TinyBf16);
        using var file = SafeTensorsFile.Open(path);
        var backend = new UploadOnlyBackend();

        var error = Should.Throw<WeightMismatchException>(() => WeightLoader.Load(table, [file], backend));

        error.Message.ShouldContain(path);
        error.Message.ShouldContain("1 missing");
        error.Message.ShouldContain("extra_head.weight [10, 64]");
        error.Message.ShouldContain("1 unexpected");
        error.Message.ShouldContain("final_layer.linear.bias [64]");
        error.Message.ShouldContain("1 with the wrong shape");
        error.Message.ShouldContain("img_in.weight: the model expects [64, 64], flux-tiny-bf16.safetensors has [64, 384]");
        error.MissingKeys.Count.ShouldBe(1);
        error.UnexpectedKeys.Count.ShouldBe(1);
        error.MisShapedKeys.Count.ShouldBe(1);
        backend.Uploaded.ShouldBeEmpty();
    }

    [Fact]
    public void Long_lists_are_cut_at_twenty_lines()
    {
        var table = Enumerable.Range(0, 25).Select(i => new ParameterInfo($"layer{i}.weight", [2, 2], DType.F32)).ToList();
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));

        var error = Should.Throw<WeightMismatchException>(() => WeightLoader.Load(table, [file], new UploadOnlyBackend()));

        error.Message.ShouldContain("25 missing");
        error.Message.ShouldContain("layer19.weight");
        error.Message.ShouldNotContain("layer20.weight");
        error.Message.ShouldContain("… and 5 more");
        error.Message.ShouldContain($"… and {file.Tensors.Count - 20} more");
    }

    [Fact]
    public void A_key_in_two_files_names_both_files()
    {
        string copy = CheckpointFiles.RewriteGolden(_temp.File("copy.safetensors"), keep: t => t.Name == "img_in.bias");
        using var golden = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));
        using var duplicate = SafeTensorsFile.Open(copy);

        var error = Should.Throw<WeightMismatchException>(() =>
            WeightLoader.Load(CheckpointFiles.TableOf(CheckpointFiles.TinyBf16), [golden, duplicate], new UploadOnlyBackend()));

        error.KeysInSeveralFiles.ShouldHaveSingleItem().ShouldBe($"img_in.bias: in {golden.Path} and {copy}");
        error.Message.ShouldContain("1 in two files");
    }

    [Fact]
    public void ComfyUi_prefix_on_every_key_is_stripped()
    {
        string prefixed = CheckpointFiles.RewriteGolden(_temp.File("comfy.safetensors"), rename: n => "model.diffusion_model." + n);
        using var file = SafeTensorsFile.Open(prefixed);

        var weights = WeightLoader.Load(CheckpointFiles.TableOf(CheckpointFiles.TinyBf16), [file], new UploadOnlyBackend());

        weights.Keys.ShouldContain("img_in.weight");
    }

    [Fact]
    public void A_prefix_that_hides_matching_names_is_named_with_the_fix()
    {
        string prefixed = CheckpointFiles.RewriteGolden(_temp.File("prefixed.safetensors"), rename: n => "transformer." + n);
        using var file = SafeTensorsFile.Open(prefixed);
        List<ParameterInfo> table = CheckpointFiles.TableOf(CheckpointFiles.TinyBf16);

        var error = Should.Throw<WeightMismatchException>(() => WeightLoader.Load(table, [file], new UploadOnlyBackend()));

        error.Message.ShouldContain($"Every tensor in '{prefixed}' starts with 'transformer.'");
        error.Message.ShouldContain($"without it {table.Count} of {table.Count} names match");
        error.Message.ShouldContain("without the prefix");
    }

    [Fact]
    public void Diffusers_naming_is_recognised_by_its_prefix()
    {
        string diffusers = CheckpointFiles.RewriteGolden(_temp.File("diffusers.safetensors"),
            rename: n => "transformer." + n.Replace("img_in", "x_embedder").Replace("double_blocks", "transformer_blocks"));
        using var file = SafeTensorsFile.Open(diffusers);

        var error = Should.Throw<WeightMismatchException>(() =>
            WeightLoader.Load([new ParameterInfo("img_in.weight", [64, 384], DType.BF16)], [file], new UploadOnlyBackend()));

        error.Message.ShouldContain("diffusers-format file");
    }

    [Fact]
    public void A_checkpoint_bundling_several_models_is_named_as_such()
    {
        string bundle = CheckpointFiles.RewriteGolden(_temp.File("all-in-one.safetensors"), rename: n => "model.diffusion_model." + n,
            extra: [new RawTensor("first_stage_model.decoder.conv_in.bias", DType.F32, [2], new byte[8])]);
        using var file = SafeTensorsFile.Open(bundle);

        var error = Should.Throw<WeightMismatchException>(() =>
            WeightLoader.Load(CheckpointFiles.TableOf(CheckpointFiles.TinyBf16), [file], new UploadOnlyBackend()));

        error.Message.ShouldContain("84 tensors start with 'model.diffusion_model.' beside others");
    }

    [Fact]
    public void Integer_tensor_where_a_weight_belongs_cannot_be_loaded()
    {
        // The writer only writes float dtypes, so this file is put together by hand.
        string path = WriteI64File(_temp.File("with-ids.safetensors"));
        using var file = SafeTensorsFile.Open(path);

        var error = Should.Throw<WeightMismatchException>(() =>
            WeightLoader.Load([new ParameterInfo("positions", [2], DType.F32)], [file], new UploadOnlyBackend()));

        error.UnloadableKeys.ShouldHaveSingleItem().ShouldContain("stored as I64");
    }

    [Fact]
    public void A_failed_upload_releases_what_was_already_uploaded()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));
        var backend = new UploadOnlyBackend(failOnUpload: 3);

        Should.Throw<OutOfMemoryException>(() => WeightLoader.Load(CheckpointFiles.TableOf(CheckpointFiles.TinyBf16), [file], backend));

        backend.Uploaded.Count.ShouldBe(3);
        backend.Uploaded.ShouldAllBe(w => w.Disposed);
    }

    private static string WriteI64File(string path)
    {
        byte[] header = System.Text.Encoding.UTF8.GetBytes("""{"positions":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""");
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)header.Length));
        stream.Write(header);
        stream.Write(new byte[16]);
        return path;
    }
}
