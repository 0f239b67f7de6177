using System.Collections.Generic;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

// The text encoders' ops (CLIP's text tower, T5's encoder). They run forward only: the encoders are frozen, so none
// has a backward rule and a graph that trained through one is a build error.

/// <summary>Token embedding: rows of a weight table picked by ids (float32 holding whole numbers).</summary>
public sealed class EmbeddingOp : OpDefinition
{
    public override string Name => "embedding";
    public override string Signature => "ids [B, L], weight [vocab, dim]";

    public override void Bind(OpBinder b)
    {
        var ids = b.Value("ids");
        var table = b.Weight("weight");
        b.Check(table.Shape.Count == 2, $"weight '{table.LocalName}' must be [vocab, dim], it is {ShapeRules.Text(table.Shape)}", "weight");
        b.Check(ids.Shape.Count >= 1, $"ids '{ids.Name}' must have at least one axis", "ids");
        b.Outputs(ids.Shape.Concat(new[] { SymbolicDim.Of(table.Shape[1]) }).ToList());
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var output = op.Outputs[0];
        var (batch, rows, _) = ShapeRules.Fold(output.Shape, e);
        e.Line($"_backend.Embedding({e.View(output)}, {e.View(op.Values["ids"])}.Reshape({batch}, {rows}, 1), {e.Weight(op.Weights["weight"]!)});");
    }
}

/// <summary>Learned absolute positions: x + weight[0..L), the same rows for every sample.</summary>
public sealed class PositionEmbeddingOp : OpDefinition
{
    public override string Name => "position_embedding";
    public override string Signature => "x [B, L, C], weight [positions ≥ L, C]";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var table = b.Weight("weight");
        b.Check(x.Shape.Count == 3, $"x '{x.Name}' must be [batch, tokens, features], it is {x.ShapeText}", "x");
        b.Check(table.Shape.Count == 2 && x.Shape[2].Equals(SymbolicDim.Of(table.Shape[1])),
            $"weight '{table.LocalName}' {ShapeRules.Text(table.Shape)} must be [positions, {x.Shape[2]}] for x '{x.Name}' {x.ShapeText}", "weight");
        // A token count known here is checked now; a runtime one by the backend (positions ≥ L).
        b.Check(!x.Shape[1].IsConstant || x.Shape[1].Constant <= table.Shape[0],
            $"x '{x.Name}' has {x.Shape[1]} tokens but weight '{table.LocalName}' only {table.Shape[0]} positions", "x");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.AddPositionEmbedding({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, {e.Weight(op.Weights["weight"]!)});");
}

/// <summary>CLIP's quick GELU, x·sigmoid(1.702·x).</summary>
public sealed class QuickGeluOp : ActivationOp
{
    public override string Name => "quick_gelu";
    protected override string BackendMethod => "QuickGelu";
    public override bool HasBackward => false;
}

/// <summary>Elementwise product (the gate of a gated feed-forward).</summary>
public sealed class MulOp : SameShapePairOp
{
    public override string Name => "mul";

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.Multiply({e.View(op.Outputs[0])}, {e.View(op.Values["a"])}, {e.View(op.Values["b"])});");
}

/// <summary>
/// T5's relative position bias [heads, queries, keys] from a table [buckets, heads]: log-spaced buckets of
/// key − query, distances past max_distance sharing the last bucket. Computed once and added to every layer's scores.
/// </summary>
public sealed class RelativePositionBiasOp : OpDefinition
{
    public override string Name => "relative_position_bias";
    public override string Signature => "weight [buckets, heads], queries, keys (sizes), max_distance, bidirectional = true";

    public override void Bind(OpBinder b)
    {
        var table = b.Weight("weight");
        var queries = b.Dim("queries");
        var keys = b.Dim("keys");
        long maxDistance = b.Integer("max_distance");
        bool bidirectional = b.Boolean("bidirectional", true);
        b.Check(table.Shape.Count == 2, $"weight '{table.LocalName}' must be [buckets, heads], it is {ShapeRules.Text(table.Shape)}", "weight");
        long buckets = table.Shape[0];
        long perDirection = bidirectional ? buckets / 2 : buckets;
        b.Check(perDirection >= 2, $"{buckets} buckets leave fewer than 2 per direction", "weight");
        b.Check(maxDistance > perDirection / 2, $"max_distance {maxDistance} must exceed the {perDirection / 2} exact buckets", "max_distance");
        b.Outputs(new[] { SymbolicDim.Of(table.Shape[1]), queries, keys });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var table = op.Weights["weight"]!;
        e.Line($"_backend.RelativePositionBias({e.View(op.Outputs[0])}, {e.Weight(table)}, {table.Shape[0]}, " +
               $"{op.Attributes["max_distance"].ToInteger("max_distance")}, {(op.Attributes["bidirectional"].Boolean == true ? "true" : "false")});");
    }
}

/// <summary>Per sample, the row of x at the first position of the largest id (CLIP's pooled output at the end token).</summary>
public sealed class ArgmaxPoolOp : OpDefinition
{
    public override string Name => "argmax_pool";
    public override string Signature => "x [B, L, C], ids [B, L]";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var ids = b.Value("ids");
        b.Check(x.Shape.Count == 3, $"x '{x.Name}' must be [batch, tokens, features], it is {x.ShapeText}", "x");
        b.Check(ids.Shape.Count == 2 && ids.Shape[0].Equals(x.Shape[0]) && ids.Shape[1].Equals(x.Shape[1]),
            $"ids '{ids.Name}' {ids.ShapeText} must be [{x.Shape[0]}, {x.Shape[1]}] for x '{x.Name}' {x.ShapeText}", "ids");
        b.Outputs(new[] { x.Shape[0], x.Shape[2] });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        string batch = e.Dim(x.Shape[0]), tokens = e.Dim(x.Shape[1]), features = e.Dim(x.Shape[2]);
        e.Line($"_backend.GatherArgmaxRows({e.View(op.Outputs[0])}.Reshape({batch}, 1, {features}), {e.View(x)}, " +
               $"{e.View(op.Values["ids"])}.Reshape({batch}, 1, {tokens}));");
    }
}
