using InFluxEdit.Models;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>Trained adapters written in either format read back (LoraReader) as the deltas s·B·A computed here by plain loops.</summary>
public class LoraWriterTests
{
    private static readonly ModelDescriptor Tiny = FluxFillTiny.Descriptor;
    private const int Rank = 3;
    private const double Alpha = 6;

    private static Dictionary<string, HostTensor> Trained(IReadOnlyList<LoraTarget> targets, TrainingRandom random)
    {
        var trained = new Dictionary<string, HostTensor>();
        foreach (var target in targets)
        {
            var down = new HostTensor(Rank, target.In);
            var up = new HostTensor(target.Rows, Rank);
            random.FillGaussian(down.Data);
            random.FillGaussian(up.Data);
            trained[target.Module.DownName] = down;
            trained[target.Module.UpName] = up;
        }
        return trained;
    }

    private static Dictionary<string, double[]> ExpectedDeltas(IReadOnlyList<LoraTarget> targets, Dictionary<string, HostTensor> trained)
    {
        var deltas = new Dictionary<string, double[]>();
        foreach (var t in targets)
        {
            string key = t.Module.Module + ".weight";
            if (!deltas.TryGetValue(key, out var delta)) deltas[key] = delta = new double[t.ModuleRows * t.In];
            var down = trained[t.Module.DownName].Data;
            var up = trained[t.Module.UpName].Data;
            for (int r = 0; r < t.Rows; r++)
                for (int c = 0; c < t.In; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < Rank; k++) sum += (double)up[r * Rank + k] * down[k * t.In + c];
                    delta[(t.RowOffset + r) * t.In + c] += Alpha / Rank * sum;
                }
        }
        return deltas;
    }

    [Theory]
    [InlineData("kohya", LoraFormat.Kohya)]
    [InlineData("kohya", LoraFormat.Diffusers)]
    [InlineData("diffusers", LoraFormat.Kohya)]
    [InlineData("diffusers", LoraFormat.Diffusers)]
    public void Written_adapters_read_back_as_the_trained_deltas(string preset, LoraFormat format)
    {
        using var dir = new TempDir();
        var targets = LoraTargets.Preset(preset, Tiny);
        if (format == LoraFormat.Diffusers)
            // Modulation layers have diffusers names too, but only the layers the format can name are kept either way.
            targets = targets.Where(t => LoraTargets.DiffusersParts(Tiny).ContainsKey(t.Module.Module)).ToList();
        var trained = Trained(targets, new TrainingRandom(5));
        string path = dir.File("lora.safetensors");
        LoraWriter.Write(path, trained, Tiny, format, new LoraExportInfo("concat", Rank, Alpha, [preset], "flux-fill-tiny", 100), dtype: DType.F32);

        var deltas = LoraReader.ReadDeltas(path, Tiny);
        var expected = ExpectedDeltas(targets, trained);
        deltas.Keys.ShouldBe(expected.Keys, ignoreOrder: true);
        foreach (var (name, values) in expected)
        {
            var actual = deltas[name].Data;
            double scale = values.Max(Math.Abs);
            for (int i = 0; i < values.Length; i++) Math.Abs(actual[i] - values[i]).ShouldBeLessThan(1e-5 * scale, $"{name}[{i}]");
        }

        using var file = SafeTensorsFile.Open(path);
        file.Metadata["method"].ShouldBe("concat");
        file.Metadata["rank"].ShouldBe("3");
        file.Metadata["base_model"].ShouldBe("flux-fill-tiny");
        file.Metadata["steps"].ShouldBe("100");
        if (format == LoraFormat.Kohya) file.Tensors.ShouldContain(t => t.Name == "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight");
        else file.Tensors.ShouldContain(t => t.Name == "transformer.transformer_blocks.0.attn.to_k.lora_A.weight");
    }

    [Fact]
    public void Half_adapters_and_foreign_names_are_refused()
    {
        using var dir = new TempDir();
        var info = new LoraExportInfo("fill", Rank, Alpha, [], "tiny", 1);
        var half = new Dictionary<string, HostTensor> { ["double_blocks.0.img_attn.proj.lora_A"] = new HostTensor(Rank, 64) };
        Should.Throw<ArgumentException>(() => LoraWriter.Write(dir.File("a.safetensors"), half, Tiny, LoraFormat.Kohya, info)).Message.ShouldContain("only its lora_A half");
        var foreign = new Dictionary<string, HostTensor> { ["not_a_layer.weight"] = new HostTensor(2) };
        Should.Throw<ArgumentException>(() => LoraWriter.Write(dir.File("b.safetensors"), foreign, Tiny, LoraFormat.Kohya, info)).Message.ShouldContain("not_a_layer");
    }
}
