using System.Globalization;
using InFluxEdit.Generator.Autodiff;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Parsing;
using InFluxEdit.Generator.Planning;
using Shouldly;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Generator;

/// <summary>The backward fusion planner on training passes: which backward rules become one kernel, and where a chain must stop.</summary>
public class BackwardFusionPlanTests(ITestOutputHelper output)
{
    private static BackwardFusionPlan Plan(BoundEntry entry) => BackwardFusionPlan.Create(entry, GradientPlan.Create(entry));

    private static BackwardFusionPlan Plan(string model, string graph) => Plan(BoundEntries.First(model, graph, unrollLoops: true));

    private static BackwardFusionPlan PlanRepoModel(string model) =>
        Plan(BoundEntries.RepoModel(model, "graphs/flux-transformer.json", unrollLoops: true));

    private static string Ops(BackwardFusionGroup group) => string.Join(" > ", group.Steps.Select(s => s.Op.Definition.Name));

    private const string Model = """{ "model": "Small", "graph": "small", "params": { "width": 8, "head": 4 } }""";

    /// <summary>A trainable input projection, then a block with the shapes of a FLUX one.</summary>
    private static string Graph(string extra = "") => $$"""
        {
          "graph": "small",
          "params": { "width": "int", "head": "int" },
          "sizes": { "B": "batch", "L": "tokens" },
          "inputs": { "x_in": ["B", "L", "width"], "mod": ["B", "width"], "pe": ["B", "L", 2, 2, 2] },
          "weights": {
            "in.weight": ["width", "width"],
            "qkv.weight": ["3 * width", "width"],
            "q_norm.scale": ["head"],
            "k_norm.scale": ["head"],
            "out.weight": ["width", "width"]
          },
          "trainable": ["in"],
          "body": [
            { "op": "linear", "x": "x_in", "weight": "in.weight", "out": "x" },
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
            { "op": "modulate", "x": "z", "shift": "mod", "scale": "mod", "out": "z" },
            { "op": "linear", "x": "z", "weight": "out.weight", "out": "o" }
          ],
          "outputs": ["o"]
        }
        """;

    [Fact]
    public void BackwardChainsOfElementwiseAndRowRulesBecomeOneKernelEach()
    {
        var plan = Plan(Model, Graph());

        // In backward order, each closed when the next rule touches its gradients (a product's backward).
        plan.Groups.Select(Ops).ShouldBe(new[]
        {
            "modulate > layer_norm > gated_residual",
            "rope > rms_norm", // k's rotation and norm, with q's rotation between them
            "rope > rms_norm",
            "modulate > layer_norm",
        });
        plan.Groups.Select(g => g.Number).ShouldBe(new[] { 1, 2, 3, 4 });
        var (k, q) = (plan.Groups[1], plan.Groups[2]);
        k.First.Output.Name.ShouldBe("k");
        k.Last.Input.ShouldBe(k.Last.Op.Values["x"]);
        q.Last.Input.Name.ShouldBe("q");
        (k.Segment, k.Lanes).ShouldBe((4L, 2)); // RMSNorm per head; a thread holds RoPE's pairs whole
        (plan.Groups[0].Segment, plan.Groups[0].Lanes).ShouldBe((8L, 1));
        // The residual stream's chain: the norm's gradient is added into y's, which the gate's branch then reads.
        plan.Groups[0].Last.Input.Name.ShouldBe("a");
        plan.Groups[0].Links.ShouldBe(2);
        // The norms' scales are not trainable here: the kernel always stands in for the rules.
        plan.Groups.SelectMany(g => g.UntrainedScales).ShouldBeEmpty();
    }

    [Fact]
    public void ARuleTouchingAChainsGradientInBetweenEndsTheChain()
    {
        // An activation of q between its norm and its rotation: its backward writes the gradient the rotation's
        // produced and the norm reads, so q's rotation and norm cannot run as one kernel; k's still do.
        var plan = Plan(Model, Graph("""{ "op": "silu", "x": "q", "out": "q" },"""));

        plan.Groups.Select(Ops).ShouldBe(new[] { "modulate > layer_norm > gated_residual", "rope > rms_norm", "modulate > layer_norm" });
        plan.Groups[1].First.Output.Name.ShouldBe("k");
    }

    [Fact]
    public void FluxFillDevBackwardGroupsFollowItsDepthsAndStopAtBlocks()
    {
        var dev = PlanRepoModel("flux-fill-dev.json");
        var tiny = PlanRepoModel("flux-fill-tiny.json");

        // Chains stop where a recomputed block starts, so a single block's LayerNorm does not reach the previous
        // block's gated residual; inside a double block it does (the MLP's norm to the attention's gate), per stream.
        // Per double block and stream: modulate > LayerNorm > gated residual and modulate > LayerNorm; per single
        // block: modulate > LayerNorm and RoPE > RMSNorm for k and q; the final layer's modulate > LayerNorm.
        var spec = SchemaParser.ParseModel("/m.json", File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "flux-fill-dev.json")));
        long Param(string name) => long.Parse(spec.Params.Single(p => p.Name == name).Value.ToString(), CultureInfo.InvariantCulture);
        var counts = dev.Groups.GroupBy(Ops).ToDictionary(g => g.Key, g => (long)g.Count());
        counts["modulate > layer_norm > gated_residual"].ShouldBe(Param("depth") * 2);
        counts["modulate > layer_norm"].ShouldBe(Param("depth") * 2 + Param("depth_single_blocks") + 1);
        counts["rope > rms_norm"].ShouldBe(Param("depth_single_blocks") * 2);
        counts.Count.ShouldBe(3);
        // RMSNorm scales are trainable in a full fine-tune: the kernel stands in only while none of them is trained.
        dev.Groups.Where(g => Ops(g) == "rope > rms_norm").ShouldAllBe(g => g.UntrainedScales.Count() == 1);
        tiny.Groups.Select(Ops).Distinct().OrderBy(o => o).ShouldBe(counts.Keys.OrderBy(o => o));
        int rules = dev.Groups.Sum(g => g.Steps.Count);
        output.WriteLine($"flux-fill-dev training backward: {rules} rules in {dev.Groups.Count} fused kernels, " +
                         $"{dev.Groups.Sum(g => g.Links)} gradients kept in registers between rules");
    }
}
