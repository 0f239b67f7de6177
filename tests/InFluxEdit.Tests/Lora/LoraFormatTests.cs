using System.Text.Json;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Lora;

/// <summary>
/// Each tool's LoRA layout, written here as that tool writes it (key names and math from its published code) on the
/// golden tiny model, read as edit --lora reads it (LoraSet), equals the change merged by hand: plain float64 loops
/// of each format's own formula, with the tiny model's row layout (q, k, v, mlp blocks) written out here.
/// </summary>
public class LoraFormatTests
{
    private static readonly ModelDescriptor Tiny = GoldenTiny.Model;
    private static Dictionary<string, HostTensor> Base => GoldenTiny.Base;
    private static int Hidden => GoldenTiny.Hidden;
    private static int Mlp => GoldenTiny.Mlp;
    private static HostTensor BaseWeight(string name) => Base[name];

    private static HostTensor Random(Random random, params int[] shape)
    {
        var t = new HostTensor(shape);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5) * 0.4f;
        return t;
    }

    private static HostTensor Scalar(float value) => new([], [value]);

    private static void Save(string path, IEnumerable<(string Name, HostTensor Value, DType DType)> tensors, Dictionary<string, string>? metadata = null) =>
        SafeTensorsWriter.WriteRaw(path, tensors.Select(t => new RawTensor(t.Name, t.DType, t.Value.Shape, DTypeEncoding.Encode(t.Value.Data, t.DType))), metadata);

    /// <summary>A value as the file stores it (bf16/f16 round), for the hand merge.</summary>
    private static HostTensor Stored(HostTensor value, DType dtype)
    {
        using var dir = new TempDir();
        SafeTensorsWriter.Write(dir.File("t.safetensors"), [new("t", value)], dtype: dtype);
        using var file = SafeTensorsFile.Open(dir.File("t.safetensors"));
        return file.ReadFloat32("t");
    }

    /// <summary>The expected change of each parameter, summed in float64.</summary>
    private sealed class Expected
    {
        public Dictionary<string, double[]> Deltas { get; } = new();

        private double[] For(string parameter) =>
            Deltas.TryGetValue(parameter, out var d) ? d : Deltas[parameter] = new double[Base[parameter].Data.Length];

        /// <summary>rows [rowOffset, …) of parameter += scale · up[upRow .. upRow + rows] · down.</summary>
        public void LowRank(string parameter, int rowOffset, HostTensor up, HostTensor down, double scale, int upRow = 0, int? rows = null)
        {
            int rank = down.Shape[0], columns = down.Shape[1], count = rows ?? up.Shape[0];
            var delta = For(parameter);
            for (int r = 0; r < count; r++)
                for (int c = 0; c < columns; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < rank; k++) sum += (double)up.Data[(upRow + r) * rank + k] * down.Data[k * columns + c];
                    delta[(rowOffset + r) * columns + c] += scale * sum;
                }
        }

        /// <summary>rows [rowOffset, …) of parameter += value (a dense [rows, in] or [rows] change).</summary>
        public void Dense(string parameter, int rowOffset, double[] value)
        {
            var delta = For(parameter);
            int width = Base[parameter].Rank == 1 ? 1 : Base[parameter].Shape[1];
            for (int i = 0; i < value.Length; i++) delta[rowOffset * width + i] += value[i];
        }
    }

    private static void ShouldMatch(LoraContent content, Expected expected, double tolerance = 1e-5)
    {
        var deltas = content.ToDeltas(Tiny);
        deltas.Keys.ShouldBe(expected.Deltas.Keys, ignoreOrder: true);
        foreach (var (name, values) in expected.Deltas)
        {
            double scale = Math.Max(values.Max(Math.Abs), 1e-12);
            var actual = deltas[name].Data;
            for (int i = 0; i < values.Length; i++)
                Math.Abs(actual[i] - values[i]).ShouldBeLessThan(tolerance * scale, $"{name}[{i}]");
        }
    }

    private static LoraContent ReadAsEdit(string path, float scale = 1f) =>
        LoraSet.Read([path], [scale], Tiny, strict: false, BaseWeight, TextWriter.Null);

    [Theory]
    [InlineData(DType.F32, 4, 8f, 0.5f)]
    [InlineData(DType.BF16, 2, 1f, 1f)]
    [InlineData(DType.F16, 6, 3f, 1.5f)]
    public void Kohya_alpha_tensors_of_any_dtype_and_shape_scale_alpha_over_rank(DType alphaType, int rank, float alpha, float userScale)
    {
        using var dir = new TempDir();
        var random = new Random(rank);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        var modules = new[] { "double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "txt_in", "final_layer.linear" };
        for (int m = 0; m < modules.Length; m++)
        {
            var w = Base[modules[m] + ".weight"];
            int r = rank + m % 2; // ranks differ between layers
            var down = Random(random, r, w.Shape[1]);
            var up = Random(random, w.Shape[0], r);
            string key = "lora_unet_" + modules[m].Replace('.', '_');
            tensors.Add((key + ".lora_down.weight", down, DType.F32));
            tensors.Add((key + ".lora_up.weight", up, DType.F32));
            // sd-scripts saves alpha as a 0-d tensor; other tools as [1]; any float dtype.
            tensors.Add((key + ".alpha", m % 2 == 0 ? Scalar(alpha) : new HostTensor([1], [alpha]), alphaType));
            expected.LowRank(modules[m] + ".weight", 0, up, down, Stored(Scalar(alpha), alphaType).Data[0] / r * userScale);
        }
        Save(dir.File("kohya.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("kohya.safetensors"), userScale), expected);
    }

    [Fact]
    public void OneTrainer_names_are_diffusers_modules_flattened_under_lora_transformer()
    {
        using var dir = new TempDir();
        var random = new Random(11);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        void Add(string name, string parameter, int rowOffset, int rows, int columns, int rank, float? alpha)
        {
            var down = Random(random, rank, columns);
            var up = Random(random, rows, rank);
            tensors.Add((name + ".lora_down.weight", down, DType.BF16));
            tensors.Add((name + ".lora_up.weight", up, DType.BF16));
            if (alpha is { } a) tensors.Add((name + ".alpha", Scalar(a), DType.F32));
            expected.LowRank(parameter, rowOffset, Stored(up, DType.BF16), Stored(down, DType.BF16), (alpha ?? rank) / rank);
        }
        Add("lora_transformer_transformer_blocks_0_attn_to_q", "double_blocks.0.img_attn.qkv.weight", 0, Hidden, Hidden, 3, 1.5f);
        Add("lora_transformer_transformer_blocks_1_attn_add_v_proj", "double_blocks.1.txt_attn.qkv.weight", 2 * Hidden, Hidden, Hidden, 5, 5f);
        Add("lora_transformer_single_transformer_blocks_1_proj_mlp", "single_blocks.1.linear1.weight", 3 * Hidden, Mlp, Hidden, 2, 8f);
        Add("lora_transformer_single_transformer_blocks_0_proj_out", "single_blocks.0.linear2.weight", 0, Hidden, Hidden + Mlp, 4, null);
        Save(dir.File("onetrainer.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("onetrainer.safetensors")), expected);
    }

    [Theory]
    [InlineData(4, 1f)]
    [InlineData(16, 0.7f)]
    public void XLabs_processor_adapters_apply_up_down_at_the_user_scale_without_alpha(int rank, float userScale)
    {
        // x-flux DoubleStreamBlockLoraProcessor: qkv_lora1/proj_lora1 on the image stream, …2 on text;
        // SingleStreamBlockLoraProcessor: qkv_lora adds to the q, k, v rows of linear1, proj_lora to linear2's output.
        using var dir = new TempDir();
        var random = new Random(rank);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        void Add(string processor, string parameter, int rows, int columns)
        {
            var down = Random(random, rank, columns);
            var up = Random(random, rows, rank);
            tensors.Add((processor + ".down.weight", down, DType.F32));
            tensors.Add((processor + ".up.weight", up, DType.F32));
            expected.LowRank(parameter, 0, up, down, userScale);
        }
        Add("double_blocks.0.processor.qkv_lora1", "double_blocks.0.img_attn.qkv.weight", 3 * Hidden, Hidden);
        Add("double_blocks.0.processor.proj_lora2", "double_blocks.0.txt_attn.proj.weight", Hidden, Hidden);
        Add("double_blocks.1.processor.qkv_lora2", "double_blocks.1.txt_attn.qkv.weight", 3 * Hidden, Hidden);
        Add("single_blocks.1.processor.qkv_lora", "single_blocks.1.linear1.weight", 3 * Hidden, Hidden);
        Add("single_blocks.0.processor.proj_lora", "single_blocks.0.linear2.weight", Hidden, Hidden + Mlp);
        Save(dir.File("xlabs.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("xlabs.safetensors"), userScale), expected);
    }

    [Fact]
    public void ComfyUI_diff_diff_b_and_set_weight_patch_whole_weights()
    {
        using var dir = new TempDir();
        var random = new Random(3);
        var expected = new Expected();
        const float userScale = 0.5f;
        var diff = Random(random, Hidden, Base["img_in.weight"].Shape[1]);
        var diffBias = Random(random, Hidden);
        var set = Random(random, Hidden, Hidden);
        Save(dir.File("comfy.safetensors"), [
            ("lora_unet_img_in.diff", diff, DType.F32), ("lora_unet_img_in.diff_b", diffBias, DType.F32),
            ("diffusion_model.double_blocks.1.img_attn.proj.set_weight", set, DType.F32),
        ]);
        expected.Dense("img_in.weight", 0, diff.Data.Select(v => (double)v * userScale).ToArray());
        expected.Dense("img_in.bias", 0, diffBias.Data.Select(v => (double)v * userScale).ToArray());
        // set_weight replaces the weight at scale 1; at other scales it moves that far towards it.
        var baseProj = Base["double_blocks.1.img_attn.proj.weight"].Data;
        expected.Dense("double_blocks.1.img_attn.proj.weight", 0, set.Data.Select((v, i) => ((double)v - baseProj[i]) * userScale).ToArray());
        ShouldMatch(ReadAsEdit(dir.File("comfy.safetensors"), userScale), expected);
    }

    [Theory]
    [InlineData(false, 4, 4f)]
    [InlineData(true, 2, 6f)]
    public void DoRA_rescales_the_norms_of_W_plus_the_scaled_product(bool peftMagnitude, int rank, float alpha)
    {
        // kohya / LyCORIS: dora_scale [1, in], the norm of each input column (ComfyUI weight_decompose);
        // PEFT: lora_magnitude_vector [out], the norm of each output row (peft/tuners/lora/dora.py get_weight_norm).
        using var dir = new TempDir();
        var random = new Random(rank);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        foreach (var (module, name) in new[] { ("double_blocks.0.img_mlp.0", "transformer_blocks.0.ff.net.0.proj"), ("txt_in", "context_embedder") })
        {
            var w = Base[module + ".weight"];
            int rows = w.Shape[0], columns = w.Shape[1];
            var down = Random(random, rank, columns);
            var up = Random(random, rows, rank);
            var v = new double[rows * columns];
            double scale = peftMagnitude ? 1.0 : alpha / rank;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < rank; k++) sum += (double)up.Data[r * rank + k] * down.Data[k * columns + c];
                    v[r * columns + c] = w.Data[r * columns + c] + scale * sum;
                }
            int axisLength = peftMagnitude ? rows : columns;
            var magnitude = Random(random, axisLength);
            for (int i = 0; i < axisLength; i++) magnitude.Data[i] += 1f;
            var norms = new double[axisLength];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                    norms[peftMagnitude ? r : c] += v[r * columns + c] * v[r * columns + c];
            var change = new double[rows * columns];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                {
                    int axis = peftMagnitude ? r : c;
                    change[r * columns + c] = magnitude.Data[axis] * v[r * columns + c] / Math.Sqrt(norms[axis]) - w.Data[r * columns + c];
                }
            expected.Dense(module + ".weight", 0, change);
            if (peftMagnitude)
            {
                tensors.Add(("transformer." + name + ".lora_A.weight", down, DType.F32));
                tensors.Add(("transformer." + name + ".lora_B.weight", up, DType.F32));
                tensors.Add(("transformer." + name + ".lora_magnitude_vector", magnitude, DType.F32));
            }
            else
            {
                string key = "lora_unet_" + module.Replace('.', '_');
                tensors.Add((key + ".lora_down.weight", down, DType.F32));
                tensors.Add((key + ".lora_up.weight", up, DType.F32));
                tensors.Add((key + ".alpha", Scalar(alpha), DType.F32));
                tensors.Add((key + ".dora_scale", new HostTensor([1, columns], magnitude.Data), DType.F32));
            }
        }
        Save(dir.File("dora.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("dora.safetensors")), expected, 1e-4);
    }

    [Fact]
    public void LyCORIS_LoKr_is_the_scaled_Kronecker_product_with_its_alpha_rule()
    {
        using var dir = new TempDir();
        var random = new Random(21);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        // (module, w1 shape, w2 rank or null for a whole w2, w1 factorised rank or null)
        void Add(string module, int a, int b, int? w1Rank, int? w2Rank, float alpha)
        {
            var w = Base[module + ".weight"];
            int c = w.Shape[0] / a, d = w.Shape[1] / b;
            string key = "lora_unet_" + module.Replace('.', '_');
            HostTensor Factor(string name, int rows, int columns, int? factorRank)
            {
                if (factorRank is not { } r) { var whole = Random(random, rows, columns); tensors.Add(($"{key}.lokr_{name}", whole, DType.F32)); return whole; }
                var left = Random(random, rows, r);
                var right = Random(random, r, columns);
                tensors.Add(($"{key}.lokr_{name}_a", left, DType.F32));
                tensors.Add(($"{key}.lokr_{name}_b", right, DType.F32));
                var product = new HostTensor(rows, columns);
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < columns; j++)
                        for (int k = 0; k < r; k++) product.Data[i * columns + j] += left.Data[i * r + k] * right.Data[k * columns + j];
                return product;
            }
            var w1 = Factor("w1", a, b, w1Rank);
            var w2 = Factor("w2", c, d, w2Rank);
            tensors.Add((key + ".alpha", Scalar(alpha), DType.F32));
            // LyCORIS: alpha/dim, dim the factorised part's rank (w2's when both are); whole factors: scale 1.
            double scale = w2Rank is { } r2 ? alpha / r2 : w1Rank is { } r1 ? alpha / r1 : 1.0;
            var change = new double[w.Data.Length];
            int columns = w.Shape[1];
            for (int i = 0; i < a; i++)
                for (int j = 0; j < b; j++)
                    for (int k = 0; k < c; k++)
                        for (int l = 0; l < d; l++)
                            change[(i * c + k) * columns + j * d + l] = scale * w1.Data[i * b + j] * w2.Data[k * d + l];
            expected.Dense(module + ".weight", 0, change);
        }
        Add("double_blocks.0.img_attn.qkv", 4, 4, null, 3, 6f);
        Add("double_blocks.1.img_mlp.2", 8, 16, 2, null, 1f);
        Add("single_blocks.0.linear1", 7, 2, null, null, 99f);
        Add("txt_in", 2, 4, 3, 5, 2.5f);
        Save(dir.File("lokr.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("lokr.safetensors")), expected);
    }

    [Theory]
    [InlineData(2, 4f)]
    [InlineData(5, 1f)]
    public void LyCORIS_LoHa_is_the_Hadamard_product_at_alpha_over_rank(int rank, float alpha)
    {
        using var dir = new TempDir();
        var random = new Random(rank + 40);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        // kohya-style names, and SimpleTuner's lycoris_ + diffusers name (single_transformer_blocks.1.proj_out is linear2).
        foreach (var (module, key) in new[] { ("double_blocks.1.txt_attn.qkv", "lora_unet_double_blocks_1_txt_attn_qkv"), ("single_blocks.1.linear2", "lycoris_single_transformer_blocks_1_proj_out") })
        {
            var w = Base[module + ".weight"];
            int rows = w.Shape[0], columns = w.Shape[1];
            var w1a = Random(random, rows, rank); var w1b = Random(random, rank, columns);
            var w2a = Random(random, rows, rank); var w2b = Random(random, rank, columns);
            tensors.AddRange([(key + ".hada_w1_a", w1a, DType.F32), (key + ".hada_w1_b", w1b, DType.F32),
                (key + ".hada_w2_a", w2a, DType.F32), (key + ".hada_w2_b", w2b, DType.F32), (key + ".alpha", Scalar(alpha), DType.F32)]);
            var change = new double[rows * columns];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                {
                    double p1 = 0, p2 = 0;
                    for (int k = 0; k < rank; k++)
                    {
                        p1 += (double)w1a.Data[r * rank + k] * w1b.Data[k * columns + c];
                        p2 += (double)w2a.Data[r * rank + k] * w2b.Data[k * columns + c];
                    }
                    change[r * columns + c] = alpha / rank * p1 * p2;
                }
            expected.Dense(module + ".weight", 0, change);
        }
        Save(dir.File("loha.safetensors"), tensors);
        ShouldMatch(ReadAsEdit(dir.File("loha.safetensors")), expected);
    }

    [Fact]
    public void AiToolkit_norm_out_linear_swaps_the_scale_and_shift_halves()
    {
        // diffusers' AdaLayerNormContinuous emits (scale, shift); BFL's final_layer.adaLN_modulation (shift, scale).
        using var dir = new TempDir();
        var random = new Random(9);
        const int rank = 3;
        var down = Random(random, rank, Hidden);
        var up = Random(random, 2 * Hidden, rank);
        var upBias = Random(random, 2 * Hidden);
        Save(dir.File("aitk.safetensors"), [
            ("transformer.norm_out.linear.lora_A.weight", down, DType.F16), ("transformer.norm_out.linear.lora_B.weight", up, DType.F16),
            ("transformer.norm_out.linear.lora_B.bias", upBias, DType.F16),
        ]);
        var expected = new Expected();
        HostTensor storedUp = Stored(up, DType.F16), storedDown = Stored(down, DType.F16), storedBias = Stored(upBias, DType.F16);
        expected.LowRank("final_layer.adaLN_modulation.1.weight", 0, storedUp, storedDown, 1.0, upRow: Hidden, rows: Hidden); // shift
        expected.LowRank("final_layer.adaLN_modulation.1.weight", Hidden, storedUp, storedDown, 1.0, upRow: 0, rows: Hidden); // scale
        expected.Dense("final_layer.adaLN_modulation.1.bias", 0, storedBias.Data.Skip(Hidden).Concat(storedBias.Data.Take(Hidden)).Select(v => (double)v).ToArray());
        ShouldMatch(ReadAsEdit(dir.File("aitk.safetensors")), expected);
    }

    [Fact]
    public void Diffusers_lora_adapter_metadata_scales_by_lora_alpha_over_rank_and_alpha_pattern()
    {
        using var dir = new TempDir();
        var random = new Random(31);
        var expected = new Expected();
        var tensors = new List<(string, HostTensor, DType)>();
        void Add(string name, string parameter, int rowOffset, int rows, int columns, int rank, double alpha)
        {
            var down = Random(random, rank, columns);
            var up = Random(random, rows, rank);
            tensors.Add(($"transformer.{name}.lora_A.weight", down, DType.F32));
            tensors.Add(($"transformer.{name}.lora_B.weight", up, DType.F32));
            expected.LowRank(parameter, rowOffset, up, down, alpha / rank);
        }
        Add("transformer_blocks.0.attn.to_k", "double_blocks.0.img_attn.qkv.weight", Hidden, Hidden, Hidden, 4, 8);
        Add("transformer_blocks.1.attn.to_out.0", "double_blocks.1.img_attn.proj.weight", 0, Hidden, Hidden, 4, 8);
        Add("single_transformer_blocks.0.attn.to_v", "single_blocks.0.linear1.weight", 2 * Hidden, Hidden, Hidden, 2, 3);
        var config = new Dictionary<string, object>
        {
            ["transformer.r"] = 4, ["transformer.lora_alpha"] = 8, ["transformer.alpha_pattern"] = new Dictionary<string, int> { ["single_transformer_blocks.0.attn.to_v"] = 3 },
        };
        Save(dir.File("peft.safetensors"), tensors, new() { ["lora_adapter_metadata"] = JsonSerializer.Serialize(config) });
        ShouldMatch(ReadAsEdit(dir.File("peft.safetensors")), expected);
    }

    [Fact]
    public void The_seeds_x_embedder_file_of_bare_weight_and_bias_is_a_change_of_img_in_at_the_scale()
    {
        using var dir = new TempDir();
        var random = new Random(4);
        var weight = Random(random, Base["img_in.weight"].Shape);
        var bias = Random(random, Hidden);
        Save(dir.File("flux_x_embedder.safetensors"), [("weight", weight, DType.F32), ("bias", bias, DType.F32)]);
        var expected = new Expected();
        expected.Dense("img_in.weight", 0, weight.Data.Select((v, i) => 0.75 * (v - Base["img_in.weight"].Data[i])).ToArray());
        expected.Dense("img_in.bias", 0, bias.Data.Select((v, i) => 0.75 * (v - Base["img_in.bias"].Data[i])).ToArray());
        ShouldMatch(ReadAsEdit(dir.File("flux_x_embedder.safetensors"), 0.75f), expected);
    }

    [Fact]
    public void A_mixed_file_skips_its_text_encoder_keys_with_one_line_and_strict_refuses_it()
    {
        using var dir = new TempDir();
        var random = new Random(12);
        var tensors = new List<(string, HostTensor, DType)>
        {
            ("lora_unet_txt_in.lora_down.weight", Random(random, 2, Base["txt_in.weight"].Shape[1]), DType.F32),
            ("lora_unet_txt_in.lora_up.weight", Random(random, Hidden, 2), DType.F32),
        };
        for (int layer = 0; layer < 3; layer++)
            foreach (string part in new[] { "lora_down.weight", "lora_up.weight", "alpha" })
                tensors.Add(($"lora_te1_text_model_encoder_layers_{layer}_mlp_fc1.{part}", part == "alpha" ? Scalar(4) : Random(random, 2, 2), DType.F32));
        tensors.Add(("text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight", Random(random, 2, 2), DType.F32));
        Save(dir.File("mixed.safetensors"), tensors);

        var log = new StringWriter();
        var content = LoraSet.Read([dir.File("mixed.safetensors")], [], Tiny, strict: false, null, log);
        content.ToDeltas(Tiny).Keys.ShouldBe(["txt_in.weight"]);
        var report = content.SkipReport().ToList();
        report.ShouldBe(["skipped 10 text-encoder keys (lora_te1_*, text_encoder_2.*): this build applies transformer adapters only"]);
        log.ToString().ShouldContain(report[0]);
        Should.Throw<LoraMismatchException>(() => LoraSet.Read([dir.File("mixed.safetensors")], [], Tiny, strict: true, null, TextWriter.Null))
            .Message.ShouldContain("lora_te1_*");

        Save(dir.File("te-only.safetensors"), tensors.Skip(2));
        Should.Throw<LoraMismatchException>(() => ReadAsEdit(dir.File("te-only.safetensors"))).Message.ShouldContain("has no key that applies to flux-fill-tiny");
    }

    [Theory]
    [InlineData("rank", "lora_unet_txt_in.lora_up.weight", "disagree on the rank (3 vs 2)")]
    [InlineData("nan-alpha", "lora_unet_txt_in.alpha", "alpha must be a finite number")]
    [InlineData("3d-up", "lora_unet_txt_in.lora_up.weight", "is 3-D [64, 2, 1]")]
    [InlineData("half", "lora_unet_txt_in.lora_down.weight", "has no partner 'lora_unet_txt_in.lora_up.weight'")]
    public void A_corrupt_adapter_is_one_error_naming_its_key(string corruption, string key, string problem)
    {
        using var dir = new TempDir();
        var random = new Random(2);
        int columns = Base["txt_in.weight"].Shape[1];
        var tensors = new List<(string, HostTensor, DType)>
        {
            ("lora_unet_txt_in.lora_down.weight", Random(random, 2, columns), DType.F32),
            ("lora_unet_txt_in.alpha", Scalar(corruption == "nan-alpha" ? float.NaN : 2f), DType.BF16),
        };
        if (corruption != "half")
            tensors.Add(("lora_unet_txt_in.lora_up.weight", corruption switch
            {
                "rank" => Random(random, Hidden, 3),
                "3d-up" => Random(random, Hidden, 2, 1),
                _ => Random(random, Hidden, 2),
            }, DType.F32));
        Save(dir.File("bad.safetensors"), tensors);
        var error = Should.Throw<LoraMismatchException>(() => ReadAsEdit(dir.File("bad.safetensors")));
        error.Message.ShouldContain($"'{key}'");
        error.Message.ShouldContain(problem);
        error.Message.Split('\n').Length.ShouldBe(1);
    }
}
