using System.Text.Json;
using System.Text.RegularExpressions;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Lora;

/// <summary>
/// Our exports, a trained img_in included, applied the way each peer's loader applies them (re-stated here from
/// ComfyUI's comfy/lora.py and diffusers' PEFT path, independently of our reader) give the trained change; and
/// `lora convert` / `lora inspect` over them.
/// </summary>
public class LoraExportTests
{
    private static readonly ModelDescriptor Tiny = GoldenTiny.Model;
    private static Dictionary<string, HostTensor> Base => GoldenTiny.Base;
    private static int Hidden => GoldenTiny.Hidden;

    private static HostTensor Gaussian(Random random, params int[] shape)
    {
        var t = new HostTensor(shape);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5);
        return t;
    }

    /// <summary>The diffusers preset's adapters at rank 3, alpha 5, and img_in trained whole, with the change each makes.</summary>
    private static (Dictionary<string, HostTensor> Trained, Dictionary<string, double[]> Expected) TrainedWithImgIn(int seed)
    {
        const int rank = 3;
        const double alpha = 5;
        var random = new Random(seed);
        var trained = new Dictionary<string, HostTensor>();
        var expected = new Dictionary<string, double[]>();
        double[] For(string p) => expected.TryGetValue(p, out var d) ? d : expected[p] = new double[Base[p].Data.Length];
        foreach (var target in LoraTargets.Preset("diffusers", Tiny))
        {
            var down = Gaussian(random, rank, target.In);
            var up = Gaussian(random, target.Rows, rank);
            trained[target.Module.DownName] = down;
            trained[target.Module.UpName] = up;
            var delta = For(target.Module.Module + ".weight");
            for (int r = 0; r < target.Rows; r++)
                for (int c = 0; c < target.In; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < rank; k++) sum += (double)up.Data[r * rank + k] * down.Data[k * target.In + c];
                    delta[(target.RowOffset + r) * target.In + c] += alpha / rank * sum;
                }
        }
        foreach (string name in new[] { "img_in.weight", "img_in.bias" })
        {
            var value = Gaussian(random, Base[name].Shape);
            trained[name] = value;
            expected[name] = value.Data.Select((v, i) => (double)v - Base[name].Data[i]).ToArray();
        }
        return (trained, expected);
    }

    private static LoraExportInfo Info => new("channel", 3, 5, ["diffusers"], "flux-fill-tiny", 10);

    private static void ShouldEqual(IReadOnlyDictionary<string, double[]> actual, IReadOnlyDictionary<string, double[]> expected, double tolerance)
    {
        actual.Keys.Where(k => actual[k].Any(v => v != 0)).ShouldBe(expected.Keys, ignoreOrder: true);
        foreach (var (name, values) in expected)
        {
            double scale = values.Max(Math.Abs);
            for (int i = 0; i < values.Length; i++) Math.Abs(actual[name][i] - values[i]).ShouldBeLessThan(tolerance * scale, $"{name}[{i}]");
        }
    }

    private static Dictionary<string, double[]> AsDouble(Dictionary<string, HostTensor> deltas) =>
        deltas.ToDictionary(d => d.Key, d => d.Value.Data.Select(v => (double)v).ToArray());

    /// <summary>
    /// ComfyUI (comfy/lora.py model_lora_keys_unet + load_lora, weight_adapter/lora.py): "lora_unet_" + the checkpoint key
    /// with '.' → '_'; W += alpha/rank · up·down; ".diff" added to the weight, ".diff_b" to the bias.
    /// </summary>
    private static Dictionary<string, double[]> ApplyAsComfyUI(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var keyMap = Base.Keys.Where(k => k.EndsWith(".weight")).ToDictionary(k => "lora_unet_" + k[..^".weight".Length].Replace('.', '_'), k => k[..^".weight".Length]);
        var result = new Dictionary<string, double[]>();
        double[] For(string p) => result.TryGetValue(p, out var d) ? d : result[p] = new double[Base[p].Data.Length];
        var loaded = new HashSet<string>();
        foreach (var (prefix, module) in keyMap)
        {
            if (file.TryGetTensor(prefix + ".lora_up.weight", out _))
            {
                var up = file.ReadFloat32(prefix + ".lora_up.weight");
                var down = file.ReadFloat32(prefix + ".lora_down.weight");
                int rank = down.Shape[0], columns = down.Shape[1];
                double alpha = file.TryGetTensor(prefix + ".alpha", out _) ? file.ReadFloat32(prefix + ".alpha").Data[0] : rank;
                var w = For(module + ".weight");
                for (int r = 0; r < up.Shape[0]; r++)
                    for (int c = 0; c < columns; c++)
                    {
                        double sum = 0;
                        for (int k = 0; k < rank; k++) sum += (double)up.Data[r * rank + k] * down.Data[k * columns + c];
                        w[r * columns + c] += alpha / rank * sum;
                    }
                loaded.UnionWith([prefix + ".lora_up.weight", prefix + ".lora_down.weight", prefix + ".alpha"]);
            }
            foreach (var (suffix, parameter) in new[] { (".diff", module + ".weight"), (".diff_b", module + ".bias") })
                if (file.TryGetTensor(prefix + suffix, out _))
                {
                    var diff = file.ReadFloat32(prefix + suffix).Data;
                    var target = For(parameter);
                    for (int i = 0; i < diff.Length; i++) target[i] += diff[i];
                    loaded.Add(prefix + suffix);
                }
        }
        file.Tensors.Select(t => t.Name).Where(n => !loaded.Contains(n)).ShouldBeEmpty("ComfyUI would print 'lora key not loaded'");
        return result;
    }

    /// <summary>diffusers' FluxTransformer2DModel names, as convert_flux_to_diffusers.py maps them (the preset's layers and x_embedder).</summary>
    private static (string Parameter, int RowOffset) DiffusersToCheckpoint(string module)
    {
        int h = Hidden;
        if (module == "x_embedder") return ("img_in", 0);
        var m = Regex.Match(module, @"^transformer_blocks\.(\d+)\.(.+)$");
        if (m.Success)
        {
            string b = $"double_blocks.{m.Groups[1].Value}.";
            return m.Groups[2].Value switch
            {
                "attn.to_q" => (b + "img_attn.qkv", 0), "attn.to_k" => (b + "img_attn.qkv", h), "attn.to_v" => (b + "img_attn.qkv", 2 * h),
                "attn.add_q_proj" => (b + "txt_attn.qkv", 0), "attn.add_k_proj" => (b + "txt_attn.qkv", h), "attn.add_v_proj" => (b + "txt_attn.qkv", 2 * h),
                "attn.to_out.0" => (b + "img_attn.proj", 0), "attn.to_add_out" => (b + "txt_attn.proj", 0),
                "ff.net.0.proj" => (b + "img_mlp.0", 0), "ff.net.2" => (b + "img_mlp.2", 0),
                "ff_context.net.0.proj" => (b + "txt_mlp.0", 0), "ff_context.net.2" => (b + "txt_mlp.2", 0),
                var other => throw new ShouldAssertException($"unexpected diffusers module {other}"),
            };
        }
        m = Regex.Match(module, @"^single_transformer_blocks\.(\d+)\.(.+)$");
        m.Success.ShouldBeTrue(module);
        string s = $"single_blocks.{m.Groups[1].Value}.linear1";
        return m.Groups[2].Value switch
        {
            "attn.to_q" => (s, 0), "attn.to_k" => (s, h), "attn.to_v" => (s, 2 * h), "proj_mlp" => (s, 3 * h),
            var other => throw new ShouldAssertException($"unexpected diffusers module {other}"),
        };
    }

    /// <summary>
    /// diffusers + PEFT: the LoraConfig from "lora_adapter_metadata" (peft_utils._create_lora_config) or, in versions
    /// before it, inferred with lora_alpha = the first lora_B's rank (get_peft_kwargs); scaling = alpha/r per module;
    /// W += scaling · B·A and, with lora_bias, b += scaling · lora_B.bias (peft/tuners/lora/layer.py).
    /// </summary>
    private static Dictionary<string, double[]> ApplyAsDiffusers(string path, bool beforeMetadata)
    {
        using var file = SafeTensorsFile.Open(path);
        var modules = file.Tensors.Select(t => t.Name).Where(n => n.EndsWith(".lora_A.weight"))
            .Select(n => n["transformer.".Length..^".lora_A.weight".Length]).Order(StringComparer.Ordinal).ToList();
        double loraAlpha;
        var alphaPattern = new Dictionary<string, double>();
        var rankPattern = new Dictionary<string, int>();
        if (beforeMetadata) loraAlpha = file.ReadFloat32("transformer." + modules[0] + ".lora_B.weight").Shape[1];
        else
        {
            using var config = JsonDocument.Parse(file.Metadata["lora_adapter_metadata"]);
            loraAlpha = config.RootElement.GetProperty("transformer.lora_alpha").GetDouble();
            foreach (var p in config.RootElement.GetProperty("transformer.alpha_pattern").EnumerateObject()) alphaPattern[p.Name] = p.Value.GetDouble();
            foreach (var p in config.RootElement.GetProperty("transformer.rank_pattern").EnumerateObject()) rankPattern[p.Name] = p.Value.GetInt32();
            int r = config.RootElement.GetProperty("transformer.r").GetInt32();
            foreach (string module in modules)
                file.ReadFloat32("transformer." + module + ".lora_A.weight").Shape[0].ShouldBe(rankPattern.GetValueOrDefault(module, r), module);
        }
        var result = new Dictionary<string, double[]>();
        double[] For(string p) => result.TryGetValue(p, out var d) ? d : result[p] = new double[Base[p].Data.Length];
        foreach (string module in modules)
        {
            var a = file.ReadFloat32("transformer." + module + ".lora_A.weight");
            var b = file.ReadFloat32("transformer." + module + ".lora_B.weight");
            int rank = a.Shape[0], columns = a.Shape[1];
            double scaling = alphaPattern.GetValueOrDefault(module, loraAlpha) / rank;
            var (parameter, rowOffset) = DiffusersToCheckpoint(module);
            var w = For(parameter + ".weight");
            for (int r = 0; r < b.Shape[0]; r++)
                for (int c = 0; c < columns; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < rank; k++) sum += (double)b.Data[r * rank + k] * a.Data[k * columns + c];
                    w[(rowOffset + r) * columns + c] += scaling * sum;
                }
            if (file.TryGetTensor("transformer." + module + ".lora_B.bias", out _))
            {
                var bias = file.ReadFloat32("transformer." + module + ".lora_B.bias").Data;
                var target = For(parameter + ".bias");
                for (int i = 0; i < bias.Length; i++) target[rowOffset + i] += scaling * bias[i];
            }
        }
        return result;
    }

    [Fact]
    public void Kohya_export_writes_img_in_as_ComfyUI_diffs_and_pads_linear1_to_the_four_way_split()
    {
        using var dir = new TempDir();
        var (trained, expected) = TrainedWithImgIn(1);
        string path = dir.File("kohya.safetensors");
        LoraWriter.Write(path, trained, Tiny, LoraFormat.Kohya, Info, name => Base[name], DType.F32);

        ShouldEqual(ApplyAsComfyUI(path), expected, 1e-5);
        using var file = SafeTensorsFile.Open(path);
        file.TryGetTensor("lora_unet_img_in.diff", out _).ShouldBeTrue();
        file.TryGetTensor("lora_unet_img_in.diff_b", out _).ShouldBeTrue();
        // diffusers' _convert_to_ai_toolkit_cat splits linear1 into q, k, v, proj_mlp exactly when the rank divides by
        // four and every off-diagonal block of lora_up is zero ("is_sparse"): our proj_mlp block is there, all zero.
        var up = file.ReadFloat32("lora_unet_single_blocks_0_linear1.lora_up.weight");
        int rank = up.Shape[1], block = rank / 4;
        (rank % 4).ShouldBe(0);
        int[] rowStarts = [0, Hidden, 2 * Hidden, 3 * Hidden, up.Shape[0]];
        for (int j = 0; j < 4; j++)
            for (int r = rowStarts[j]; r < rowStarts[j + 1]; r++)
                for (int k = 0; k < rank; k++)
                    if (k / block != j || j == 3) up.Data[r * rank + k].ShouldBe(0f, $"row {r}, column {k}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Diffusers_export_writes_img_in_as_a_full_rank_x_embedder_pair_with_bias_that_PEFT_applies(bool beforeMetadata)
    {
        using var dir = new TempDir();
        var (trained, expected) = TrainedWithImgIn(2);
        string path = dir.File("diffusers.safetensors");
        LoraWriter.Write(path, trained, Tiny, LoraFormat.Diffusers, Info, name => Base[name], DType.F32);
        ShouldEqual(ApplyAsDiffusers(path, beforeMetadata), expected, 1e-5);
        using var file = SafeTensorsFile.Open(path);
        file.TryGetTensor("transformer.x_embedder.lora_B.bias", out _).ShouldBeTrue();
    }

    [Fact]
    public void Exports_are_bf16_unless_asked_and_read_back_as_edit_applies_them()
    {
        using var dir = new TempDir();
        var (trained, expected) = TrainedWithImgIn(3);
        foreach (var format in new[] { LoraFormat.Kohya, LoraFormat.Diffusers })
        {
            string path = dir.File($"{format}.safetensors");
            LoraWriter.Write(path, trained, Tiny, format, Info, name => Base[name]);
            using (var file = SafeTensorsFile.Open(path))
                file.Tensors.Where(t => !t.Name.EndsWith(".alpha")).ShouldAllBe(t => t.DType == DType.BF16);
            // bf16 keeps 8 bits of mantissa: the change read back is within bf16 rounding of the trained one.
            ShouldEqual(AsDouble(LoraSet.Read([path], [], Tiny, false, name => Base[name], TextWriter.Null).ToDeltas(Tiny)), expected, 0.05);
        }
    }

    [Fact]
    public void Convert_round_trips_every_kind_and_merges_files_at_their_scales()
    {
        using var dir = new TempDir();
        var random = new Random(8);
        // A kohya LoRA with a LoKr layer and a full-weight diff; a second file in the PEFT layout.
        string first = dir.File("first.safetensors"), second = dir.File("second.safetensors");
        var lokrW1 = Gaussian(random, 4, 2);
        SafeTensorsWriter.Write(first, new Dictionary<string, HostTensor>
        {
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = Gaussian(random, 2, Hidden),
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = Gaussian(random, 3 * Hidden, 2),
            ["lora_unet_double_blocks_0_img_attn_qkv.alpha"] = new([], [1f]),
            ["lora_unet_single_blocks_1_linear2.lokr_w1"] = lokrW1,
            ["lora_unet_single_blocks_1_linear2.lokr_w2"] = Gaussian(random, Hidden / 4, Base["single_blocks.1.linear2.weight"].Shape[1] / 2),
            ["lora_unet_img_in.diff"] = Gaussian(random, Base["img_in.weight"].Shape),
            ["lora_unet_img_in.diff_b"] = Gaussian(random, Hidden),
        });
        SafeTensorsWriter.Write(second, new Dictionary<string, HostTensor>
        {
            ["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"] = Gaussian(random, 5, Hidden),
            ["transformer.transformer_blocks.0.attn.to_k.lora_B.weight"] = Gaussian(random, Hidden, 5),
            ["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"] = Gaussian(random, 5, Hidden),
            ["transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"] = Gaussian(random, Hidden, 5),
        });
        Dictionary<string, double[]> Deltas(string path, float scale = 1f) =>
            AsDouble(LoraSet.Read([path], [scale], Tiny, false, null, TextWriter.Null).ToDeltas(Tiny));
        var expected = Deltas(first, 0.5f);
        foreach (var (name, values) in Deltas(second, 2f))
        {
            if (!expected.TryGetValue(name, out var sum)) expected[name] = sum = new double[values.Length];
            for (int i = 0; i < values.Length; i++) sum[i] += values[i];
        }

        string Convert(string input, string output, string format, params string[] more)
        {
            var options = new LoraOptions
            {
                Action = "convert", Files = [input, dir.File(output)], Format = format, ExportDType = "f32",
                Loras = more, LoraScales = more.Length > 0 ? [0.5f, 2f] : [],
            };
            LoraCommand.Run(options, TextWriter.Null, [Tiny]).ShouldBe(0);
            return dir.File(output);
        }
        string kohya = Convert(first, "merged-kohya.safetensors", "kohya", second);
        ShouldEqual(Deltas(kohya), expected, 1e-5);
        string diffusers = Convert(kohya, "merged-diffusers.safetensors", "diffusers");
        ShouldEqual(Deltas(diffusers), expected, 1e-5);
        ShouldEqual(Deltas(Convert(diffusers, "again-kohya.safetensors", "kohya")), expected, 1e-5);
    }

    [Fact]
    public void Inspect_names_the_format_ranks_layers_skips_and_the_trained_img_in()
    {
        using var dir = new TempDir();
        var (trained, _) = TrainedWithImgIn(4);
        string path = dir.File("ours.safetensors");
        LoraWriter.Write(path, trained, Tiny, LoraFormat.Kohya, Info, name => Base[name]);
        // A text-encoder adapter next to ours, as files trained with one carry.
        using (var file = SafeTensorsFile.Open(path))
        {
            var tensors = file.Tensors.Select(t => RawTensor.From(file, t)).ToList();
            tensors.Add(new RawTensor("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", DType.F32, [], DTypeEncoding.Encode([1f], DType.F32)));
            SafeTensorsWriter.WriteRaw(dir.File("mixed.safetensors"), tensors);
        }
        var log = new StringWriter();
        LoraCommand.Run(new LoraOptions { Action = "inspect", Files = [dir.File("mixed.safetensors")] }, log,
            ModelCatalog.All.Select(m => m.Descriptor).ToList()).ShouldBe(0);
        string text = log.ToString();
        text.ShouldContain("model: flux-fill-tiny");
        text.ShouldContain("formats: diff, kohya");
        text.ShouldContain("rank 3/9/12"); // linear1 padded to four blocks of 3, qkv three blocks of 3
        text.ShouldContain("single_blocks.0.linear1 ← lora_unet_single_blocks_0_linear1 [lora, rank 12");
        text.ShouldContain("full-weight changes: img_in.bias, img_in.weight");
        text.ShouldContain("skipped 1 text-encoder keys (lora_te1_*): this build applies transformer adapters only");
    }
}
