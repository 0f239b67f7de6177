using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class LoraTargetsTests
{
    private static readonly ModelDescriptor Tiny = FluxFillTiny.Descriptor;

    [Fact]
    public void Kohya_preset_is_every_2d_weight_inside_the_blocks_whole()
    {
        var expected = Tiny.Parameters
            .Where(p => p.Shape.Length == 2 && (p.Name.StartsWith("double_blocks.") || p.Name.StartsWith("single_blocks.")))
            .Select(p => p.Name[..^".weight".Length]).ToList();
        var targets = LoraTargets.Preset("kohya", Tiny);
        targets.Select(t => t.Name).ShouldBe(expected, ignoreOrder: true);
        targets.ShouldAllBe(t => t.Module.Part == null && t.RowOffset == 0 && t.Rows == t.ModuleRows);
        targets.ShouldContain(t => t.Name == "double_blocks.0.img_mod.lin");
        targets.ShouldContain(t => t.Name == "single_blocks.1.modulation.lin");
    }

    [Fact]
    public void Diffusers_preset_splits_qkv_and_takes_only_qkv_rows_of_linear1()
    {
        var targets = LoraTargets.Preset("diffusers", Tiny).ToDictionary(t => t.Name);
        int depth = int.Parse(Tiny.Params["depth"]), single = int.Parse(Tiny.Params["depth_single_blocks"]);
        int hidden = int.Parse(Tiny.Params["hidden_size"]);
        var expected = new List<string>();
        for (int i = 0; i < depth; i++)
            foreach (string stream in new[] { "img", "txt" })
            {
                for (int part = 0; part < 3; part++) expected.Add($"double_blocks.{i}.{stream}_attn.qkv:{part}");
                expected.AddRange([$"double_blocks.{i}.{stream}_attn.proj", $"double_blocks.{i}.{stream}_mlp.0", $"double_blocks.{i}.{stream}_mlp.2"]);
            }
        for (int i = 0; i < single; i++)
            for (int part = 0; part < 3; part++) expected.Add($"single_blocks.{i}.linear1:{part}");
        targets.Keys.ShouldBe(expected, ignoreOrder: true);

        var key = targets["single_blocks.1.linear1:1"];
        (key.RowOffset, key.Rows, key.In).ShouldBe((hidden, hidden, hidden));
        key.ModuleRows.ShouldBe(Tiny.Parameters.Single(p => p.Name == "single_blocks.1.linear1.weight").Shape[0]);
    }

    [Fact]
    public void Resolve_rejects_unknown_modules_and_parts()
    {
        Should.Throw<ArgumentException>(() => LoraTargets.Resolve(LoraModule.Parse("double_blocks.9.img_attn.qkv"), Tiny));
        Should.Throw<ArgumentException>(() => LoraTargets.Resolve(LoraModule.Parse("double_blocks.0.img_attn.qkv:3"), Tiny));
        LoraTargets.Resolve(LoraModule.Parse("img_in"), Tiny).In.ShouldBe(Tiny.Parameters.Single(p => p.Name == "img_in.weight").Shape[1]);
    }

    [Fact]
    public void Module_names_round_trip_through_parameter_names()
    {
        var module = LoraModule.Parse("double_blocks.0.img_attn.qkv:2");
        (module.Module, module.Part).ShouldBe(("double_blocks.0.img_attn.qkv", (int?)2));
        LoraModule.TryParseHalf(module.UpName, out var parsed, out bool isDown).ShouldBeTrue();
        (parsed, isDown).ShouldBe((module, false));
        LoraModule.TryParseHalf("img_in.weight", out _, out _).ShouldBeFalse();
    }

    [Theory]
    [InlineData(LoraInitKind.Gaussian)]
    [InlineData(LoraInitKind.KaimingUniform)]
    public void Init_draws_A_with_the_published_spread_and_zero_B(LoraInitKind kind)
    {
        const int rank = 8, inFeatures = 4096;
        var down = LoraInit.Down(kind, rank, inFeatures, new TrainingRandom(3));
        double variance = down.Data.Average(v => (double)v * v);
        if (kind == LoraInitKind.Gaussian)
            variance.ShouldBe(1.0 / (rank * rank), 0.03 / (rank * rank)); // PEFT: normal_(std = 1/r)
        else
        {
            double bound = 1 / Math.Sqrt(inFeatures); // kaiming_uniform_(a=√5): U(−1/√fan_in, 1/√fan_in)
            down.Data.ShouldAllBe(v => Math.Abs(v) <= bound);
            variance.ShouldBe(bound * bound / 3, 0.03 * bound * bound / 3);
        }
        LoraInit.Down(kind, rank, inFeatures, new TrainingRandom(3)).Data.ShouldBe(down.Data);

        using var backend = new InFluxEdit.Runtime.Backends.Cpu.CpuBackend();
        var parameters = LoraInit.Create(backend, LoraTargets.Preset("diffusers", Tiny).Take(2), rank, kind, new TrainingRandom(3));
        parameters.Select(p => p.Name).ShouldBe(["double_blocks.0.img_attn.qkv:0.lora_A", "double_blocks.0.img_attn.qkv:0.lora_B",
            "double_blocks.0.img_attn.qkv:1.lora_A", "double_blocks.0.img_attn.qkv:1.lora_B"]);
        TensorTransfer.Download(backend, parameters[1].Value).Data.ShouldAllBe(v => v == 0);
        foreach (var p in parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
    }
}
