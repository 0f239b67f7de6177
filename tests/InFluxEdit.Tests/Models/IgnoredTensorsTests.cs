using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Models;

/// <summary>Published encoder files carry tensors the text tower does not use; the schema's ignored_tensors lets them load.</summary>
public sealed class IgnoredTensorsTests
{
    /// <summary>The golden tiny CLIP with what a full CLIPModel file or a ComfyUI clip_l adds, plus any extra tensors given.</summary>
    private static string ClipWithExtras(TempDir dir, params string[] extraNames)
    {
        using var golden = SafeTensorsFile.Open(TestPaths.Golden("clip-tiny.safetensors"));
        var tensors = golden.Tensors.ToDictionary(t => t.Name, t => golden.ReadFloat32(t.Name));
        tensors["text_projection.weight"] = new HostTensor(48, 48);
        tensors["logit_scale"] = new HostTensor(1);
        tensors["vision_model.embeddings.class_embedding"] = new HostTensor(8);
        foreach (string name in extraNames) tensors[name] = new HostTensor(2);
        string path = dir.File("clip.safetensors");
        SafeTensorsWriter.Write(path, tensors, golden.Metadata.ToDictionary(p => p.Key, p => p.Value));
        return path;
    }

    [Fact]
    public void A_clip_file_with_projection_and_vision_tower_is_recognised_and_loads()
    {
        using var dir = new TempDir();
        using var file = SafeTensorsFile.Open(ClipWithExtras(dir));
        var match = ModelRecognizer.Recognize(file, ModelCatalog.All.Select(m => m.Descriptor).Where(d => d.Family == "clip-text"));
        match.Model.Name.ShouldBe("clip-tiny");
        match.Reason.ShouldContain("tensors have the schema's names");
        using var backend = new CpuBackend();
        var weights = WeightLoader.Load(match.Model.Parameters, [file], backend, ignored: match.Model.Ignores);
        weights.Count.ShouldBe(match.Model.Parameters.Count);
        foreach (var w in weights.Values) w.Dispose();
    }

    [Fact]
    public void Extra_tensors_the_schema_does_not_name_are_still_refused()
    {
        using var dir = new TempDir();
        using var file = SafeTensorsFile.Open(ClipWithExtras(dir, "text_model.encoder.layers.9.mlp.fc1.weight"));
        var model = ModelCatalog.All.Single(m => m.Descriptor.Name == "clip-tiny").Descriptor;
        var error = Should.Throw<WeightMismatchException>(() => WeightLoader.Load(model.Parameters, [file], new CpuBackend(), ignored: model.Ignores));
        error.Message.ShouldContain("text_model.encoder.layers.9.mlp.fc1.weight");
        error.Message.ShouldNotContain("text_projection");
    }

    [Theory]
    [InlineData("vision_model.*", "vision_model.encoder.layers.0.mlp.fc1.weight", true)]
    [InlineData("vision_model.*", "text_model.vision_model", false)]
    [InlineData("decoder.*.weight", "decoder.block.0.weight", true)]
    [InlineData("decoder.*.weight", "decoder.block.0.bias", false)]
    [InlineData("logit_scale", "logit_scale", true)]
    [InlineData("logit_scale", "logit_scale2", false)]
    public void Key_patterns_match_whole_keys_with_star_for_any_text(string pattern, string key, bool matches) =>
        KeyPattern.Matches(pattern, key).ShouldBe(matches);
}
