using System.Globalization;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Parsing;
using InFluxEdit.Generator.Planning;
using Shouldly;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Generator;

/// <summary>The fusion planner on bound graphs: which ops become one kernel, what each kernel stores, and when a chain must stop.</summary>
public class FusionPlanTests(ITestOutputHelper output)
{
    private static (BoundEntry Entry, FusionPlan Fusion) Plan(BoundEntry entry) => (entry, FusionPlan.Create(entry, BufferPlan.Create(entry)));

    private static (BoundEntry Entry, FusionPlan Fusion) Plan(string model, string graph) => Plan(BoundEntries.First(model, graph));

    private static (BoundEntry Entry, FusionPlan Fusion) PlanRepoModel(string model, string graph) => Plan(BoundEntries.RepoModel(model, graph));

    private static string Ops(FusionGroup group) => string.Join(" > ", group.Steps.Select(s => s.Op.Definition.Name));

    private const string Model = """{ "model": "Small", "graph": "small", "params": { "width": 8, "head": 4 } }""";

    /// <summary>A block with the shapes of a FLUX one: norm, modulation, a qkv split, per-head norms and rotations.</summary>
    private static string Graph(string extra = "") => $$"""
        {
          "graph": "small",
          "params": { "width": "int", "head": "int" },
          "sizes": { "B": "batch", "L": "tokens" },
          "inputs": { "x": ["B", "L", "width"], "mod": ["B", "width"], "pe": ["B", "L", 2, 2, 2] },
          "weights": {
            "qkv.weight": ["3 * width", "width"],
            "q_norm.scale": ["head"],
            "k_norm.scale": ["head"],
            "out.weight": ["width", "width"]
          },
          "body": [
            { "op": "layer_norm", "x": "x", "out": "n" },
            { "op": "modulate", "x": "n", "shift": "mod", "scale": "mod", "out": "n" },
            { "op": "linear", "x": "n", "weight": "qkv.weight", "out": "qkv" },
            { "op": "split", "x": "qkv", "axis": -1, "parts": 3, "out": ["q", "k", "v"] },
            { "op": "rms_norm", "x": "q", "scale": "q_norm.scale", "group": "head", "out": "q" },
            { "op": "rms_norm", "x": "k", "scale": "k_norm.scale", "group": "head", "out": "k" },
            {{extra}}
            { "op": "rope", "x": "q", "pe": "pe", "out": "q" },
            { "op": "rope", "x": "k", "pe": "pe", "out": "k" },
            { "op": "attention", "q": "q", "k": "k", "v": "v", "heads": 2, "out": "a" },
            { "op": "linear", "x": "a", "weight": "out.weight", "out": "a" },
            { "op": "gated_residual", "residual": "x", "x": "a", "gate": "mod", "out": "y" },
            { "op": "layer_norm", "x": "y", "out": "z" },
            { "op": "add", "a": "z", "b": "y", "out": "z" }
          ],
          "outputs": ["y", "z"]
        }
        """;

    [Fact]
    public void ChainsOfElementwiseAndRowOpsBecomeOneKernelEach()
    {
        var (_, fusion) = Plan(Model, Graph());

        fusion.Groups.Select(Ops).ShouldBe(new[]
        {
            "layer_norm > modulate",
            "rms_norm > rope", // q's norm and rotation, with k's ops between them
            "rms_norm > rope",
            "gated_residual > layer_norm > add",
        });
        var (q, k) = (fusion.Groups[1], fusion.Groups[2]);
        q.Input.Name.ShouldBe("q");
        k.Input.Name.ShouldBe("k");
        (q.Segment, q.Lanes).ShouldBe((4L, 2)); // RMSNorm per head; a thread holds RoPE's pairs whole
        (fusion.Groups[0].Segment, fusion.Groups[0].Lanes).ShouldBe((8L, 1));
        // Only what is read after a group is stored: the norm's output before modulation stays in registers, while
        // the residual stream y is an output of the entry.
        fusion.Groups[0].Writes.Select(w => w.Name).ShouldBe(new[] { "n" });
        fusion.Groups[0].Writes.Single().ShouldBe(fusion.Groups[0].Steps[1].Output);
        fusion.Groups[3].Writes.Select(w => w.Name).ShouldBe(new[] { "y", "z" });
        // add reads y, a value of the chain: from the kernel's registers, not as an operand.
        fusion.Groups[3].Operands.Select(o => o.Argument).ShouldBe(new[] { "out", "out", "in", "x", "gate" });
        (fusion.UnfusedLaunches, fusion.FusedLaunches).ShouldBe((9L, 4L));
    }

    [Fact]
    public void AnOpReadingAChainValueInBetweenEndsTheChain()
    {
        // A tap of q after its norm must see the normed q: the norm cannot wait for the rotation.
        var (_, fusion) = Plan(Model, Graph("""{ "op": "tap", "x": "q", "name": "q" },"""));

        fusion.Groups.Select(Ops).ShouldBe(new[] { "layer_norm > modulate", "rms_norm > rope", "gated_residual > layer_norm > add" });
        fusion.Groups[1].Input.Name.ShouldBe("k");
    }

    [Fact]
    public void AnOpWritingTheMemoryAChainUsesEndsTheChain()
    {
        // An activation over the whole qkv in place, after q's and k's norms: the norms must have run before it, and
        // the rotations read what it wrote. Parts of one split (q and k) are disjoint and do not stop each other.
        var (_, fusion) = Plan(Model, Graph("""{ "op": "silu", "x": "qkv", "out": "qkv" },"""));

        fusion.Groups.Select(Ops).ShouldBe(new[] { "layer_norm > modulate", "gated_residual > layer_norm > add" });
    }

    [Fact]
    public void FluxFillDevForwardLaunchCountsFollowItsDepths()
    {
        var (_, fusion) = PlanRepoModel("flux-fill-dev.json", "graphs/flux-transformer.json");
        var (_, tiny) = PlanRepoModel("flux-fill-tiny.json", "graphs/flux-transformer.json");

        // Per double block each stream fuses LayerNorm → modulate (1 launch saved) and gated residual → LayerNorm →
        // modulate (2); per single block LayerNorm → modulate (1) and RMSNorm → RoPE for q and k (1 each); outside
        // the blocks the two vec adds (1) and the final LayerNorm → modulate (1).
        var dev = SchemaParser.ParseModel("/m.json", File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "flux-fill-dev.json")));
        long Param(string name) => long.Parse(dev.Params.Single(p => p.Name == name).Value.ToString(), CultureInfo.InvariantCulture);
        long saved = Param("depth") * 2 * (1 + 2) + Param("depth_single_blocks") * (1 + 2) + 2;
        (fusion.UnfusedLaunches - fusion.FusedLaunches).ShouldBe(saved);
        tiny.Groups.Select(Ops).ShouldBe(fusion.Groups.Select(Ops));
        output.WriteLine($"flux-fill-dev forward: {fusion.UnfusedLaunches} element-wise and row-wise launches unfused, {fusion.FusedLaunches} fused ({fusion.Groups.Count} kernels)");
    }
}
