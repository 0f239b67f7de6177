using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Models;

public sealed class ModelRecognizerTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    // The golden file's config written the way a schema might write it: 4 for 4.0, other spacing, and without
    // qkv_bias, so the file's config has a key no candidate knows.
    private static readonly Dictionary<string, string> FillTinyParams = new()
    {
        ["in_channels"] = "384", ["out_channels"] = "64", ["vec_in_dim"] = "32", ["context_in_dim"] = "48",
        ["hidden_size"] = "64", ["mlp_ratio"] = "4", ["num_heads"] = "2", ["depth"] = "2", ["depth_single_blocks"] = "2",
        ["axes_dim"] = "[8,12,12]", ["theta"] = "10000.0", ["guidance_embed"] = "true",
    };

    private static ModelDescriptor FillTiny() => new(
        "flux-fill-tiny", "schemas/flux-fill-tiny.json", "flux", FillTinyParams, CheckpointFiles.TableOf(CheckpointFiles.TinyBf16));

    // The same architecture without the Fill conditioning: 64 input channels.
    private static ModelDescriptor DevTiny() => new(
        "flux-dev-tiny", "schemas/flux-dev-tiny.json", "flux",
        new Dictionary<string, string>(FillTinyParams) { ["in_channels"] = "64" },
        CheckpointFiles.TableOf(CheckpointFiles.TinyBf16).Select(p => p.Name == "img_in.weight" ? p with { Shape = [64, 64] } : p).ToList());

    [Fact]
    public void Config_metadata_picks_the_model_whose_params_it_equals()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));

        ModelMatch match = ModelRecognizer.Recognize(file, [DevTiny(), FillTiny()]);

        match.Model.Name.ShouldBe("flux-fill-tiny");
        match.Reason.ShouldContain("config matches");
        match.Reason.ShouldContain("84 tensors have the schema's names and shapes");
    }

    [Fact]
    public void Config_tells_apart_models_whose_tensors_are_identical()
    {
        var otherTheta = FillTiny() with { Name = "flux-fill-tiny-theta", Params = new Dictionary<string, string>(FillTinyParams) { ["theta"] = "20000" } };
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));

        ModelRecognizer.Recognize(file, [otherTheta, FillTiny()]).Model.Name.ShouldBe("flux-fill-tiny");
    }

    [Theory]
    [InlineData("1e-05", "0.00001", true)]
    [InlineData("4", "4.0", true)]
    [InlineData("[8, 12, 12]", "[8,12,12.0]", true)]
    [InlineData("{\"a\": [1, true]}", "{ \"a\" : [1.0,true] }", true)]
    [InlineData("true", "true", true)]
    [InlineData("\"silu\"", "\"silu\"", true)]
    [InlineData("4", "4.5", false)]
    [InlineData("[8, 12, 12]", "[8, 12]", false)]
    [InlineData("true", "1", false)]
    [InlineData("\"silu\"", "\"gelu\"", false)]
    public void Config_values_compare_as_json_values(string inFile, string inSchema, bool same)
    {
        string path = CheckpointFiles.RewriteGolden(_temp.File("config.safetensors"),
            metadata: new Dictionary<string, string> { ["config"] = $$"""{"value": {{inFile}}}""" });
        using var file = SafeTensorsFile.Open(path);
        var model = FillTiny() with { Params = new Dictionary<string, string> { ["value"] = inSchema } };

        if (same)
            ModelRecognizer.Recognize(file, [model]).Reason.ShouldContain("config matches (value)");
        else
            Should.Throw<ModelNotRecognizedException>(() => ModelRecognizer.Recognize(file, [model]))
                .Message.ShouldContain($"value is {inFile} here, the schema has {inSchema}");
    }

    [Fact]
    public void Without_config_the_tensor_names_and_shapes_decide()
    {
        string path = CheckpointFiles.RewriteGolden(_temp.File("no-config.safetensors"), keepMetadata: false);
        using var file = SafeTensorsFile.Open(path);

        ModelMatch match = ModelRecognizer.Recognize(file, [FillTiny(), DevTiny()]);

        match.Model.Name.ShouldBe("flux-fill-tiny");
        match.Reason.ShouldContain("no config");
    }

    [Fact]
    public void A_config_no_candidate_understands_leaves_the_decision_to_the_tensors()
    {
        string path = CheckpointFiles.RewriteGolden(_temp.File("foreign-config.safetensors"),
            metadata: new Dictionary<string, string> { ["config"] = """{"num_layers": 19, "patch_size": 1}""" });
        using var file = SafeTensorsFile.Open(path);

        ModelRecognizer.Recognize(file, [DevTiny(), FillTiny()]).Model.Name.ShouldBe("flux-fill-tiny");
    }

    [Fact]
    public void ReadConfig_gives_each_value_as_json_text()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));

        IReadOnlyDictionary<string, string> config = ModelRecognizer.ReadConfig(file).ShouldNotBeNull();

        config["axes_dim"].ShouldBe("[8, 12, 12]");
        config["mlp_ratio"].ShouldBe("4.0");
        config["qkv_bias"].ShouldBe("true");
        using var noConfig = SafeTensorsFile.Open(TestPaths.Golden("embeddings.safetensors"));
        ModelRecognizer.ReadConfig(noConfig).ShouldBeNull();
    }

    [Fact]
    public void An_unknown_variant_lists_the_differences_and_the_params_block_for_a_new_schema()
    {
        const string config = """{"in_channels": 320, "hidden_size": 64, "mlp_ratio": 4.0, "axes_dim": [8, 12, 12]}""";
        var imgIn320 = new RawTensor("img_in.weight", DType.BF16, [64, 320], new byte[64 * 320 * 2]);
        string path = CheckpointFiles.RewriteGolden(_temp.File("fill-320.safetensors"),
            metadata: new Dictionary<string, string> { ["config"] = config }, keep: t => t.Name != "img_in.weight", extra: [imgIn320]);
        using var file = SafeTensorsFile.Open(path);

        var error = Should.Throw<ModelNotRecognizedException>(() => ModelRecognizer.Recognize(file, [FillTiny(), DevTiny()]));

        error.Message.ShouldContain(path);
        error.Message.ShouldContain("flux-fill-tiny: in_channels is 320 here, the schema has 384");
        error.Message.ShouldContain("flux-fill-tiny: img_in.weight is [64, 320] here, the schema expects [64, 384]");
        error.Message.ShouldContain("flux-dev-tiny: img_in.weight is [64, 320] here, the schema expects [64, 64]");
        error.Message.ShouldContain("schemas/");
        error.Message.ShouldContain("""
              "params": {
                "in_channels": 320,
                "hidden_size": 64,
                "mlp_ratio": 4.0,
                "axes_dim": [8, 12, 12]
              }
            """.ReplaceLineEndings());
    }

    [Fact]
    public void Without_config_and_with_no_exact_table_the_message_lists_differences_only()
    {
        string path = CheckpointFiles.RewriteGolden(_temp.File("partial.safetensors"), keepMetadata: false,
            keep: t => !t.Name.StartsWith("single_blocks.1.", StringComparison.Ordinal));
        using var file = SafeTensorsFile.Open(path);

        var error = Should.Throw<ModelNotRecognizedException>(() => ModelRecognizer.Recognize(file, [FillTiny()]));

        error.Message.ShouldContain("flux-fill-tiny: single_blocks.1.linear1.weight [");
        error.Message.ShouldContain("is missing");
        error.Message.ShouldContain("… and");
        error.Message.ShouldNotContain("\"params\"");
    }

    [Fact]
    public void Identical_schemas_are_reported_as_ambiguous()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(CheckpointFiles.TinyBf16));

        var error = Should.Throw<ModelNotRecognizedException>(() =>
            ModelRecognizer.Recognize(file, [FillTiny(), FillTiny() with { Name = "copy", SchemaFile = "schemas/copy.json" }]));

        error.Message.ShouldContain("equally");
        error.Message.ShouldContain("schemas/copy.json");
    }
}
