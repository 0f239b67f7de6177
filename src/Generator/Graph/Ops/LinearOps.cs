using InFluxEdit.Generator.Graph;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>y = x·Wᵀ + b with W stored [out, in] as in PyTorch checkpoints.</summary>
public sealed class LinearOp : OpDefinition
{
    public override string Name => "linear";
    public override string Signature => "x, weight [out, in], bias? [out]";
    public override bool ReadsWeightsAsProducts => true;

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var w = b.Weight("weight");
        var bias = b.OptionalWeight("bias");
        b.Check(w.Shape.Count == 2, $"weight '{w.LocalName}' must be [out, in], it is {ShapeRules.Text(w.Shape)}", "weight");
        b.Check(x.Shape.Count >= 1 && x.Shape[x.Shape.Count - 1].Equals(SymbolicDim.Of(w.Shape[1])),
            $"x '{x.Name}' {x.ShapeText} has {x.Shape[x.Shape.Count - 1]} features but weight '{w.LocalName}' {ShapeRules.Text(w.Shape)} takes {w.Shape[1]}", "x");
        if (bias != null)
            b.Check(bias.Shape.Count == 1 && bias.Shape[0] == w.Shape[0],
                $"bias '{bias.LocalName}' {ShapeRules.Text(bias.Shape)} must be [{w.Shape[0]}] to match weight '{w.LocalName}'", "bias");
        b.Outputs(ShapeRules.WithLast(x.Shape, SymbolicDim.Of(w.Shape[0])));
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.Linear({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, {e.Weight(op.Weights["weight"]!)}, {e.WeightOrNull(op.Weights["bias"])});");

    public override bool HasBackward => true;

    /// <summary>dx = dy·W (+ the adapter's share); a trainable layer also gets dW += dyᵀ·x, db += Σ dy and its adapter's dA, dB.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var weight = op.Weights["weight"]!;
        string dy = e.Gradient(op.Outputs[0]);
        string? dx = null;
        if (e.NeedsGradient(x))
        {
            dx = e.Temporary(x);
            e.Line($"Backward.Gemm({dx}, {dy}, false, {e.Weight(weight)}, false, 1f, 0f);");
        }
        if (op.IsTrainable)
        {
            e.Line($"LoraBackward({e.ModuleKey(weight)}, {e.LoraDown(op)}, {(dx == null ? "null" : dx)}, {dy}, {e.View(x)});");
            var bias = op.Weights["bias"];
            e.Line($"WeightBackward({e.WeightKey(weight)}, {(bias == null ? "null" : e.WeightKey(bias))}, {dy}, {e.View(x)});");
        }
        if (dx != null) e.Accumulate(x, dx);
    }
}
