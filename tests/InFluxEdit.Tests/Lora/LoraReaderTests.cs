using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Lora;

/// <summary>
/// LoRAs in every supported layout give the same model as merging W + (alpha/rank)·scale·up·down into the
/// checkpoint by hand (plain loops here, independent of the reader's GEMM).
/// </summary>
public class LoraReaderTests
{
    private static readonly ModelDescriptor Tiny = FluxFillTiny.Descriptor;

    private static HostTensor Random(Random random, params int[] shape)
    {
        var t = new HostTensor(shape);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5) * 0.2f;
        return t;
    }

    private static HostTensor Scalar(float value) => new(Array.Empty<int>(), new[] { value });

    /// <summary>W[rowOffset.., :] += scale · up · down in float64.</summary>
    private static void MergeByHand(HostTensor weight, int rowOffset, HostTensor up, HostTensor down, double scale)
    {
        int rows = up.Shape[0], rank = up.Shape[1], columns = down.Shape[1];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                double sum = 0;
                for (int k = 0; k < rank; k++) sum += (double)up.Data[r * rank + k] * down.Data[k * columns + c];
                weight.Data[(rowOffset + r) * columns + c] += (float)(scale * sum);
            }
    }

    private static HostTensor Forward(IBackend backend, string weightsPath, IReadOnlyDictionary<string, HostTensor>? deltas)
    {
        using var file = SafeTensorsFile.Open(weightsPath);
        using var inputs = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
        var weights = WeightLoader.Load(Tiny.Parameters, new[] { file }, backend, deltas: deltas);
        var model = new FluxFillTiny(backend, weights);
        var device = model.InputNames.ToDictionary(n => n, n => backend.Upload(inputs.ReadFloat32(n)));
        var output = model.Run(device)["out"];
        var host = backend.Download(output, output.Shape);
        output.Dispose();
        foreach (var t in device.Values.Concat(weights.Values)) t.Dispose();
        return host;
    }

    private static Dictionary<string, HostTensor> GoldenWeights()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name));
    }

    [Fact]
    public void KohyaLoraEqualsMergingByHand()
    {
        using var dir = new TempDir();
        var random = new Random(5);
        var weights = GoldenWeights();
        var lora = new Dictionary<string, HostTensor>();
        const int rank = 4;
        const float alpha = 8f, userScale = 0.5f;
        foreach (var module in new[] { "double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "txt_in", "double_blocks.1.txt_mod.lin" })
        {
            var w = weights[module + ".weight"];
            var down = Random(random, rank, w.Shape[1]);
            var up = Random(random, w.Shape[0], rank);
            string kohya = "lora_unet_" + module.Replace('.', '_');
            lora[kohya + ".lora_down.weight"] = down;
            lora[kohya + ".lora_up.weight"] = up;
            lora[kohya + ".alpha"] = Scalar(alpha);
            MergeByHand(w, 0, up, down, alpha / rank * userScale);
        }
        SafeTensorsWriter.Write(dir.File("lora.safetensors"), lora);
        SafeTensorsWriter.Write(dir.File("merged.safetensors"), weights);

        using var backend = new CpuBackend();
        var withLora = Forward(backend, TestPaths.Golden("flux-tiny.safetensors"),
            LoraReader.ReadDeltas(dir.File("lora.safetensors"), Tiny, userScale));
        var merged = Forward(backend, dir.File("merged.safetensors"), null);
        var without = Forward(backend, TestPaths.Golden("flux-tiny.safetensors"), null);

        TensorComparison.RelativeL2(withLora.Data, merged.Data).ShouldBeLessThan(1e-5);
        TensorComparison.RelativeL2(withLora.Data, without.Data).ShouldBeGreaterThan(1e-3, "the LoRA must change the output");
    }

    [Fact]
    public void DiffusersSplitQkvFillsTheRowsOfTheFusedLayer()
    {
        using var dir = new TempDir();
        var random = new Random(6);
        var weights = GoldenWeights();
        var expected = new Dictionary<string, HostTensor>
        {
            ["double_blocks.0.img_attn.qkv.weight"] = new HostTensor(192, 64),
            ["single_blocks.1.linear1.weight"] = new HostTensor(448, 64),
            ["double_blocks.1.txt_attn.proj.weight"] = new HostTensor(64, 64),
        };
        var lora = new Dictionary<string, HostTensor>();
        void Add(string name, string fused, int rowOffset, int rows, int columns)
        {
            var down = Random(random, 2, columns);
            var up = Random(random, rows, 2);
            lora[name + ".lora_A.weight"] = down;
            lora[name + ".lora_B.weight"] = up;
            MergeByHand(expected[fused], rowOffset, up, down, 1.0); // PEFT without alpha: scale 1
        }
        Add("transformer.transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv.weight", 0, 64, 64);
        Add("transformer.transformer_blocks.0.attn.to_v", "double_blocks.0.img_attn.qkv.weight", 128, 64, 64);
        Add("transformer.single_transformer_blocks.1.attn.to_k", "single_blocks.1.linear1.weight", 64, 64, 64);
        Add("transformer.single_transformer_blocks.1.proj_mlp", "single_blocks.1.linear1.weight", 192, 256, 64);
        Add("transformer.transformer_blocks.1.attn.to_add_out", "double_blocks.1.txt_attn.proj.weight", 0, 64, 64);
        SafeTensorsWriter.Write(dir.File("peft.safetensors"), lora);

        var deltas = LoraReader.ReadDeltas(dir.File("peft.safetensors"), Tiny);

        deltas.Keys.ShouldBe(expected.Keys, ignoreOrder: true);
        foreach (var (key, delta) in expected)
            TensorComparison.RelativeL2(deltas[key].Data, delta.Data).ShouldBeLessThan(1e-6, key);
    }

    [Fact]
    public void UnknownModulesAreListed()
    {
        using var dir = new TempDir();
        var random = new Random(7);
        SafeTensorsWriter.Write(dir.File("lora.safetensors"), new Dictionary<string, HostTensor>
        {
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = Random(random, 2, 64),
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = Random(random, 192, 2),
            ["lora_unet_double_blocks_7_img_attn_qkv.lora_down.weight"] = Random(random, 2, 64),
            ["lora_unet_double_blocks_7_img_attn_qkv.lora_up.weight"] = Random(random, 192, 2),
        });
        // Tolerant by default: the unknown adapter is reported and the rest applies; --strict-lora refuses the file.
        var content = LoraReader.Read(dir.File("lora.safetensors"), new LoraNames(Tiny), new LoraReadOptions());
        content.ToDeltas(Tiny).Keys.ShouldBe(["double_blocks.0.img_attn.qkv.weight"]);
        content.SkipReport().ShouldHaveSingleItem().ShouldStartWith("skipped 2 keys naming no layer of flux-fill-tiny (lora_unet_double_blocks_7_img_attn_qkv.lora_down.weight");
        var error = Should.Throw<LoraMismatchException>(() => LoraReader.Read(dir.File("lora.safetensors"), new LoraNames(Tiny), new LoraReadOptions(Strict: true)));
        error.Message.ShouldContain("--strict-lora");
        error.Message.ShouldContain("lora_unet_double_blocks_7_img_attn_qkv.lora_up.weight");
    }

    [Fact]
    public void LoraForAnotherModelSaysSo()
    {
        using var dir = new TempDir();
        var random = new Random(8);
        SafeTensorsWriter.Write(dir.File("lora.safetensors"), new Dictionary<string, HostTensor>
        {
            // The real model's width: 3072 features, not the tiny model's 64.
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = Random(random, 2, 3072),
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = Random(random, 9216, 2),
        });
        var error = Should.Throw<LoraMismatchException>(() => LoraReader.ReadDeltas(dir.File("lora.safetensors"), Tiny));
        error.Message.ShouldContain("'lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight' is [2, 3072]; the layer takes 64 inputs");
    }
}
