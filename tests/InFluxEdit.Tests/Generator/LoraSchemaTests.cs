using InFluxEdit.Generator;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Parsing;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Generator;

/// <summary>
/// The graph schema's "lora" section: checked at the schema's lines, emitted into the descriptor, and all the runtime
/// knows of which layers a preset trains.
/// </summary>
public class LoraSchemaTests
{
    private const string GraphPath = "/schemas/graphs/stack.json";
    private const string ModelPath = "/schemas/stack-small.json";

    private const string Model = """
        {
          "model": "StackSmall",
          "graph": "stack",
          "params": { "width": 8, "depth": 2 }
        }
        """;

    // Blocks with a fused qkv (split by "peft" into q, k, v) and an output layer; each test breaks one line.
    private const string Graph = """
        {
          "graph": "stack",
          "params": { "width": "int", "depth": "int" },
          "sizes": { "B": "batch", "L": "tokens" },
          "inputs": { "x": ["B", "L", "width"] },
          "weights": { "in.weight": ["width", "width"], "head.weight": ["width", "width"] },
          "body": [
            { "op": "linear", "x": "x", "weight": "in.weight", "out": "x" },
            { "repeat": "depth", "index": "i", "prefix": "blocks.{i}.",
              "weights": { "qkv.weight": ["3 * width", "width"], "out.weight": ["width", "3 * width"] },
              "body": [
                { "op": "linear", "x": "x", "weight": "qkv.weight", "out": "h" },
                { "op": "linear", "x": "h", "weight": "out.weight", "out": "y" },
                { "op": "add", "a": "x", "b": "y", "out": "x" }
              ] },
            { "op": "linear", "x": "x", "weight": "head.weight", "out": "z" }
          ],
          "outputs": ["z"],
          "trainable": ["blocks.{i}.*"],
          "lora_formats": {
            "peft": { "modules": {
              "blocks.{i}.qkv": { "split": ["layers.{i}.q", "layers.{i}.k", "layers.{i}.v"], "rows": ["width", "width", "width"] },
              "blocks.{i}.out": "layers.{i}.o"
            } }
          },
          "lora": {
            "default_preset": "all",
            "rank": 4,
            "alpha": 2,
            "presets": {
              "all": { "init": "kaiming_uniform", "targets": ["blocks.{i}.*"] },
              "qv": { "split": "peft", "targets": [{ "module": "blocks.{i}.qkv", "slices": ["q", "v"] }] }
            }
          }
        }
        """;

    private static CompiledModelSource Compile(string graph)
    {
        var graphSpec = SchemaParser.ParseGraph(GraphPath, graph);
        if (graphSpec.Diagnostics.Count > 0) return new CompiledModelSource("", "", null, graphSpec.Diagnostics);
        return ModelCompiler.Compile(SchemaParser.ParseModel(ModelPath, Model), new[] { graphSpec }.ToEquatableArray());
    }

    private static SchemaDiagnostic Single(string graph, string id, string snippet)
    {
        var diagnostics = Compile(graph).Diagnostics;
        diagnostics.Count.ShouldBe(1, string.Join("\n", diagnostics));
        var d = diagnostics[0];
        d.Id.ShouldBe(id, d.ToString());
        d.Span.Path.ShouldBe(GraphPath);
        (d.Span.Line + 1).ShouldBe(graph.Substring(0, graph.IndexOf(snippet, StringComparison.Ordinal)).Count(c => c == '\n') + 1, d.ToString());
        return d;
    }

    [Fact]
    public void PresetsAreEmittedIntoTheDescriptorResolvedToModules()
    {
        var result = Compile(Graph);
        result.Diagnostics.ShouldBeEmpty();
        string source = result.Source!;
        source.ShouldContain("Lora = new LoraDefaults(\"all\", Rank: 4, Alpha: 2, Presets: new LoraPreset[]");
        source.ShouldContain("new(\"all\", \"\", Init: \"kaiming_uniform\", Split: null, Targets: new LoraPresetTarget[]");
        source.ShouldContain("new(\"blocks.{i}.qkv\"),");
        source.ShouldContain("new(\"blocks.{i}.out\"),");
        source.ShouldContain("new(\"qv\", \"\", Init: \"gaussian\", Split: \"peft\", Targets: new LoraPresetTarget[]");
        source.ShouldContain("new(\"blocks.{i}.qkv\", Parts: new[] { 0, 2 }),");
    }

    [Fact]
    public void AliasRowsReorderBlocksAndAnEmptyNameLeavesABlockUnnamed()
    {
        // A tool naming the fused qkv whole in k, q, v order, and one that names only its q rows.
        string graph = Graph.Replace("\"blocks.{i}.out\": \"layers.{i}.o\"", "\"blocks.{i}.out\": \"layers.{i}.o\"\n            } },\n" +
            "            \"other\": { \"modules\": {\n" +
            "              \"blocks.{i}.qkv\": { \"split\": [\"kqv.{i}\", \"kqv.{i}\", \"kqv.{i}\"], \"rows\": [\"width\", \"width\", \"width\"], \"alias_rows\": [\"width\", 0, \"2 * width\"] },\n" +
            "              \"blocks.{i}.out\": { \"split\": [\"\"], \"rows\": [\"width\"] }");
        var result = Compile(graph);
        result.Diagnostics.ShouldBeEmpty();
        result.Source!.ShouldContain("new(\"other\", \"kqv.{i}\", \"blocks.{i}.qkv\", 0, 8, AliasRowOffset: 8),");
        result.Source.ShouldContain("new(\"other\", \"kqv.{i}\", \"blocks.{i}.qkv\", 8, 8),");
        result.Source.ShouldContain("new(\"other\", \"kqv.{i}\", \"blocks.{i}.qkv\", 16, 8, AliasRowOffset: 16),");
        result.Source.ShouldNotContain("new(\"other\", \"\"");
    }

    [Fact]
    public void AliasRowsThatDoNotPairUpAreReported()
    {
        string graph = Graph.Replace("\"rows\": [\"width\", \"width\", \"width\"] }", "\"rows\": [\"width\", \"width\", \"width\"], \"alias_rows\": [0] }");
        Single(graph, DiagnosticIds.InvalidSchema, "\"blocks.{i}.qkv\": { \"split\"").Message.ShouldContain("\"alias_rows\" starts) must pair up");
    }

    [Fact]
    public void BadPatternIsReportedAtItsLine()
    {
        string graph = Graph.Replace("\"targets\": [\"blocks.{i}.*\"]", "\"targets\": [\"blocks.{n}.*\"]");
        Single(graph, DiagnosticIds.InvalidSchema, "blocks.{n}.*").Message.ShouldContain("{i} for a block index");
    }

    [Fact]
    public void UnknownWeightIsReportedAtItsLine()
    {
        string graph = Graph.Replace("\"targets\": [\"blocks.{i}.*\"]", "\"targets\": [\"blocks.{i}.mlp\"]");
        Single(graph, DiagnosticIds.UnknownWeight, "blocks.{i}.mlp").Message.ShouldContain("names no linear layer");
    }

    [Fact]
    public void FrozenLayerIsRefused()
    {
        string graph = Graph.Replace("\"targets\": [\"blocks.{i}.*\"]", "\"targets\": [\"head\"]");
        Single(graph, DiagnosticIds.InvalidSchema, "[\"head\"]").Message.ShouldContain("not \"trainable\"");
    }

    [Fact]
    public void SliceTheFormatDoesNotHaveIsReported()
    {
        string graph = Graph.Replace("\"slices\": [\"q\", \"v\"]", "\"slices\": [\"q\", \"w\"]");
        var d = Single(graph, DiagnosticIds.InvalidSchema, "{ \"module\": \"blocks.{i}.qkv\"");
        d.Message.ShouldContain("slice \"w\" matches none of the row blocks of 'blocks.{i}.qkv' (layers.{i}.q, layers.{i}.k, layers.{i}.v)");
    }

    [Fact]
    public void SlicesOfALayerTheFormatDoesNotSplitAreReported()
    {
        string graph = Graph.Replace("{ \"module\": \"blocks.{i}.qkv\", \"slices\"", "{ \"module\": \"blocks.{i}.out\", \"slices\"");
        Single(graph, DiagnosticIds.InvalidSchema, "{ \"module\": \"blocks.{i}.out\"").Message.ShouldContain("does not split 'blocks.{i}.out'");
    }

    [Fact]
    public void SplitNamingNoFormatIsReported()
    {
        string graph = Graph.Replace("\"split\": \"peft\"", "\"split\": \"kohya\"");
        Single(graph, DiagnosticIds.InvalidSchema, "\"qv\":").Message.ShouldContain("not in \"lora_formats\" (known: peft)");
    }

    [Fact]
    public void DefaultPresetMustBeAPreset()
    {
        string graph = Graph.Replace("\"default_preset\": \"all\"", "\"default_preset\": \"most\"");
        Single(graph, DiagnosticIds.InvalidSchema, "\"most\"").Message.ShouldContain("not one of the presets (all, qv)");
    }

    [Fact]
    public void UnknownInitIsReported()
    {
        string graph = Graph.Replace("\"init\": \"kaiming_uniform\"", "\"init\": \"orthogonal\"");
        Single(graph, DiagnosticIds.InvalidSchema, "\"orthogonal\"").Message.ShouldContain("gaussian or kaiming_uniform");
    }

    [Fact]
    public void RuntimeReadsPresetsFromTheDescriptorOnly()
    {
        // A hand-made descriptor with no FLUX names: the runtime expands whatever presets it carries.
        var model = new ModelDescriptor("stack", "stack.json", "stack", new Dictionary<string, string>(),
        [
            new ParameterInfo("layers.0.qkv.weight", [12, 4], DType.F32),
            new ParameterInfo("layers.0.out.weight", [4, 12], DType.F32),
            new ParameterInfo("layers.1.qkv.weight", [12, 4], DType.F32),
            new ParameterInfo("layers.1.out.weight", [4, 12], DType.F32),
        ])
        {
            LoraAliases =
            [
                new LoraAlias("peft", "m.{i}.q", "layers.{i}.qkv", 0, 4),
                new LoraAlias("peft", "m.{i}.k", "layers.{i}.qkv", 4, 4),
                new LoraAlias("peft", "m.{i}.v", "layers.{i}.qkv", 8, 4),
            ],
            Lora = new LoraDefaults("v", 8, 8,
            [
                new LoraPreset("v", "", "gaussian", "peft", [new LoraPresetTarget("layers.{i}.qkv", [2]), new LoraPresetTarget("layers.{i}.out")]),
                new LoraPreset("whole", "", "kaiming_uniform", null, [new LoraPresetTarget("layers.{i}.qkv")]),
            ]),
        };
        LoraTargets.Preset("v", model).Select(t => (t.Name, t.RowOffset, t.Rows)).ShouldBe(
        [
            ("layers.0.qkv:2", 8, 4), ("layers.0.out", 0, 4), ("layers.1.qkv:2", 8, 4), ("layers.1.out", 0, 4),
        ]);
        LoraTargets.Preset("whole", model).Select(t => (t.Name, t.Rows)).ShouldBe([("layers.0.qkv", 12), ("layers.1.qkv", 12)]);
        LoraInit.KindOf("whole", model).ShouldBe(LoraInitKind.KaimingUniform);
        Should.Throw<ArgumentException>(() => LoraTargets.Preset("kohya", model)).Message.ShouldContain("stack has: v, whole");
    }

    [Fact]
    public void FluxSchemaCarriesTheKohyaAndDiffusersPresets()
    {
        var lora = FluxFillTiny.Descriptor.Lora.ShouldNotBeNull();
        (lora.DefaultPreset, lora.Rank, lora.Alpha).ShouldBe(("diffusers", 16, 16.0));
        lora.Presets.Select(p => (p.Name, p.Init)).ShouldBe([("kohya", "kaiming_uniform"), ("diffusers", "gaussian")]);
        LoraInit.KindOf("kohya", FluxFillTiny.Descriptor).ShouldBe(LoraInitKind.KaimingUniform);
        lora.Presets.Single(p => p.Name == "diffusers").Targets.Single(t => t.Module == "single_blocks.{i}.linear1").Parts.ShouldBe([0, 1, 2]);
    }
}
