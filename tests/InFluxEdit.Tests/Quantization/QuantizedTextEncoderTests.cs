using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Text;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// Text encoders from the fp8 and GGUF files people hold (t5xxl_fp8_e4m3fn, a T5 Q8_0 GGUF): their product matrices stay
/// quantized in memory (T5-XXL decoded to float32 would take 19 GB), while the tables other ops read (embeddings, the
/// relative position bias) are held as floats, which the compiler knows from the graph.
/// </summary>
public class QuantizedTextEncoderTests
{
    [Fact]
    public void TheCompilerMarksEveryWeightThatAnOpOtherThanAProductReads()
    {
        ParameterInfo[] Of(string model) => ModelCatalog.All.Single(m => m.Descriptor.Name == model).Descriptor.Parameters.ToArray();
        Of("t5-tiny").Where(p => p.ReadOutsideProducts).Select(p => p.Name).ShouldBe(
            ["shared.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], ignoreOrder: true);
        Of("clip-tiny").Where(p => p.ReadOutsideProducts).Select(p => p.Name).ShouldBe(
            ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"], ignoreOrder: true);
        Of("flux-fill-dev").ShouldNotContain(p => p.ReadOutsideProducts, "every FLUX matrix is a linear layer's");
        Of("flux-vae-tiny").Where(p => p.Shape.Length == 4).ShouldAllBe(p => p.ReadOutsideProducts);
    }

    [Theory]
    [InlineData(TensorFormat.F8_E4M3, "t5-tiny-fp8.safetensors")]
    [InlineData(TensorFormat.Q8_0, "t5-tiny-Q8_0.gguf")]
    public void AQuantizedT5FileStaysQuantizedAndEncodesAsItsDecodedWeightsDo(TensorFormat format, string name)
    {
        using var dir = new TempDir();
        string path = dir.File(name);
        // Every matrix quantized, the embedding too, as published encoder files have it.
        WeightConverter.Convert(TestPaths.Golden("t5-tiny.safetensors"), path, format);
        using var backend = new CpuBackend();
        var catalog = ModelCatalog.All.Where(m => m.Descriptor.Family == TextEncoders.T5Family).ToList();
        using var kept = LoadedModel.LoadFiles([path], null, TextEncoders.T5Family, backend, catalog);
        var matrices = kept.Model.Info.Parameters.Where(p => p.Shape.Length == 2).ToList();
        foreach (var parameter in matrices)
            (kept.Weights[parameter.Name] is CpuQuantizedTensor).ShouldBe(
                !parameter.ReadOutsideProducts && QuantizationPlan.FormatFor(format, parameter.Shape) != null, parameter.Name);
        matrices.Count(p => kept.Weights[p.Name] is CpuQuantizedTensor).ShouldBeGreaterThan(0);

        using var file = WeightFile.Open(path);
        var info = catalog.Single(m => m.Descriptor == kept.Model.Info);
        var decoded = WeightLoader.Load(info.Descriptor.Parameters, [file], backend, ignored: info.Descriptor.Ignores, precision: new BasePrecision(TensorFormat.F32));
        try
        {
            int[] ids = [5, 17, 999, 1, 0, 42, 7, 300];
            var fromBlocks = TextEncoders.EncodeT5(kept.Model, [ids]);
            var fromFloats = TextEncoders.EncodeT5(info.Create(backend, decoded), [ids]);
            TensorComparison.RelativeL2(fromBlocks.Data, fromFloats.Data).ShouldBeLessThan(1e-6);
        }
        finally
        {
            foreach (var weight in decoded.Values) weight.Dispose();
        }
    }

    /// <summary>
    /// llama.cpp's names for a T5 encoder's tensors (its LLM_ARCH_T5ENCODER table), which city96's T5 GGUF files use,
    /// written out here by hand from that table: the schema's key_renames must map every one to the Hugging Face key.
    /// </summary>
    private static string LlamaCppName(string huggingFace)
    {
        if (huggingFace == "shared.weight") return "token_embd.weight";
        if (huggingFace == "encoder.final_layer_norm.weight") return "enc.output_norm.weight";
        var parts = huggingFace.Split('.'); // encoder.block.{i}.layer.{0|1}.{module...}.weight
        string block = $"enc.blk.{parts[2]}.";
        string module = string.Join('.', parts[5..^1]);
        string name = (parts[4], module) switch
        {
            ("0", "SelfAttention.q") => "attn_q",
            ("0", "SelfAttention.k") => "attn_k",
            ("0", "SelfAttention.v") => "attn_v",
            ("0", "SelfAttention.o") => "attn_o",
            ("0", "SelfAttention.relative_attention_bias") => "attn_rel_b",
            ("0", "layer_norm") => "attn_norm",
            ("1", "DenseReluDense.wi_0") => "ffn_gate",
            ("1", "DenseReluDense.wi_1") => "ffn_up",
            ("1", "DenseReluDense.wo") => "ffn_down",
            ("1", "layer_norm") => "ffn_norm",
            _ => throw new ArgumentException($"no llama.cpp name for {huggingFace}"),
        };
        return block + name + ".weight";
    }

    [Fact]
    public void AT5GgufWithLlamaCppNamesLoadsAndEncodesAsTheHuggingFaceFile()
    {
        using var dir = new TempDir();
        string gguf = dir.File("t5-v1_1-tiny-encoder-Q8_0.gguf");
        using (var golden = SafeTensorsFile.Open(TestPaths.Golden("t5-tiny.safetensors")))
        {
            var tensors = golden.StoredTensors.Select(t =>
            {
                var values = golden.ReadFloat32(t);
                // Q8_0 where a row is whole blocks (as llama.cpp's quantize leaves the rest), F32 otherwise.
                var format = t.Shape.Length == 2 && t.Shape[1] % 32 == 0 ? TensorFormat.Q8_0 : TensorFormat.F32;
                return EncodedTensor.Encode(LlamaCppName(t.Name), values, format);
            }).ToList();
            GgufWriter.Write(gguf, tensors);
        }
        using var backend = new CpuBackend();
        var catalog = ModelCatalog.All.Where(m => m.Descriptor.Family == TextEncoders.T5Family).ToList();
        using var fromGguf = LoadedModel.LoadFiles([gguf], null, TextEncoders.T5Family, backend, catalog);
        fromGguf.Model.Info.Name.ShouldBe("t5-tiny");
        using var fromSafetensors = LoadedModel.LoadFiles([TestPaths.Golden("t5-tiny.safetensors")], null, TextEncoders.T5Family, backend, catalog);
        int[] ids = [5, 17, 999, 1, 0, 42];
        double error = TensorComparison.RelativeL2(TextEncoders.EncodeT5(fromGguf.Model, [ids]).Data, TextEncoders.EncodeT5(fromSafetensors.Model, [ids]).Data);
        error.ShouldBeGreaterThan(0, "the GGUF's matrices are Q8_0");
        error.ShouldBeLessThan(2e-2);
    }
}

