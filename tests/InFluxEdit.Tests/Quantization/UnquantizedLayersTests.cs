using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.WeightFiles;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// The FLUX schemas' "unquantized" layers: quantizing at load and convert leave them float, as city96's FLUX GGUF files
/// do (their llama.cpp patch skips keys containing txt_in., img_in., time_in., vector_in., guidance_in. and final_layer.).
/// </summary>
public class UnquantizedLayersTests
{
    private static readonly string[] City96Unquantized = ["txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."];

    private static readonly CompiledModelInfo Tiny = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");

    [Theory]
    [InlineData("flux-fill-tiny")]
    [InlineData("flux-fill-dev")]
    public void FluxSchemasMarkTheMatricesPublishedQuantizedFilesKeepFloat(string model)
    {
        var parameters = ModelCatalog.All.Single(m => m.Descriptor.Name == model).Descriptor.Parameters;
        var expected = parameters.Where(p => p.Shape.Length == 2 && City96Unquantized.Any(prefix => p.Name.Contains(prefix))).Select(p => p.Name);
        parameters.Where(p => p.Unquantized).Select(p => p.Name).ShouldBe(expected, ignoreOrder: true);
        parameters.Count(p => p.Unquantized).ShouldBeGreaterThan(0);
    }

    [Fact]
    public void QuantizingAtLoadLeavesTheUnquantizedLayersFloatAndQuantizesTheRest()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        using var backend = new CpuBackend();
        var weights = WeightLoader.Load(Tiny.Descriptor.Parameters, [file], backend, ignored: Tiny.Descriptor.Ignores, precision: new BasePrecision(TensorFormat.Q8_0));
        try
        {
            foreach (var parameter in Tiny.Descriptor.Parameters.Where(p => p.Shape.Length == 2))
                (weights[parameter.Name] is CpuQuantizedTensor).ShouldBe(!parameter.Unquantized, parameter.Name);
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }

    [Fact]
    public void ConvertKeepsTheUnquantizedLayersOfARecognisedModelAndQuantizesEverythingOtherwise()
    {
        using var dir = new TempDir();
        string source = TestPaths.Golden("flux-tiny.safetensors");
        var recognised = WeightConverter.Convert(source, dir.File("model.gguf"), TensorFormat.Q8_0, ModelCatalog.All.Select(m => m.Descriptor));
        var plain = WeightConverter.Convert(source, dir.File("plain.gguf"), TensorFormat.Q8_0);
        recognised.Model.ShouldBe("flux-fill-tiny");
        recognised.Unquantized.ShouldBe(Tiny.Descriptor.Parameters.Where(p => p.Unquantized).Select(p => p.Name).Order(StringComparer.Ordinal));
        plain.Model.ShouldBeNull();
        Tiny.Descriptor.Parameters.ShouldContain(p => p.Unquantized && QuantizationPlan.FormatFor(TensorFormat.Q8_0, p.Shape) != null,
            "some unquantized layer must be one Q8_0 could hold, or this test shows nothing");

        using var stored = SafeTensorsFile.Open(source);
        using var converted = WeightFile.Open(dir.File("model.gguf"));
        using var everything = WeightFile.Open(dir.File("plain.gguf"));
        foreach (var parameter in Tiny.Descriptor.Parameters.Where(p => p.Shape.Length == 2))
        {
            var asStored = stored.StoredTensors.Single(t => t.Name == parameter.Name).Format!.Value;
            var quantized = QuantizationPlan.FormatFor(TensorFormat.Q8_0, parameter.Shape) ?? asStored;
            converted.StoredTensors.Single(t => t.Name == parameter.Name).Format.ShouldBe(parameter.Unquantized ? asStored : quantized, parameter.Name);
            everything.StoredTensors.Single(t => t.Name == parameter.Name).Format.ShouldBe(quantized, parameter.Name);
        }
    }
}
