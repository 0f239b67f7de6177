namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>LayerNorm over the last axis, optionally with an affine scale and bias (CLIP's; FLUX's has none).</summary>
public sealed class LayerNormOp : OpDefinition
{
    public override string Name => "layer_norm";
    public override string Signature => "x, scale? [C], bias? [C], eps = 1e-6";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var scale = b.OptionalWeight("scale");
        var bias = b.OptionalWeight("bias");
        b.Number("eps", "0.000001");
        var features = x.Shape[x.Shape.Count - 1];
        b.Check(bias == null || scale != null, "a bias needs a scale (affine LayerNorm has both, or a scale alone)", "bias");
        foreach (var (weight, argument) in new[] { (scale, "scale"), (bias, "bias") })
            if (weight != null)
                b.Check(weight.Shape.Count == 1 && features.Equals(SymbolicDim.Of(weight.Shape[0])),
                    $"{argument} '{weight.LocalName}' {ShapeRules.Text(weight.Shape)} must be [{features}] for x '{x.Name}' {x.ShapeText}", argument);
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        string eps = e.Float(op.Attributes["eps"].Number!.Value);
        if (op.Weights.TryGetValue("scale", out var scale) && scale != null)
            e.Line($"_backend.AffineLayerNorm({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, {e.Weight(scale)}, {e.WeightOrNull(op.Weights["bias"])}, {eps});");
        else
            e.Line($"_backend.LayerNorm({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, {eps});");
    }

    public override bool HasBackward => true;

    /// <summary>The backward rule covers the plain norm; the affine one (frozen text encoders) has none yet.</summary>
    public override bool HasBackwardFor(BoundOp op) => !(op.Weights.TryGetValue("scale", out var scale) && scale != null);

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        string dx = e.Temporary(x);
        e.Line($"Backward.LayerNormBackward({dx}, {e.Gradient(op.Outputs[0])}, {e.View(x)}, {e.Float(op.Attributes["eps"].Number!.Value)});");
        e.Accumulate(x, dx);
    }
}

/// <summary>RMSNorm over groups of the last axis (per attention head), times a learned scale.</summary>
public sealed class RmsNormOp : OpDefinition
{
    public override string Name => "rms_norm";
    public override string Signature => "x, scale [group], group = last dim, eps = 1e-6";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var scale = b.Weight("scale");
        var last = x.Shape[x.Shape.Count - 1];
        b.Check(last.IsConstant, $"x '{x.Name}' {x.ShapeText} must have a constant last dimension", "x");
        long group = b.Integer("group", last.Constant.ToString());
        b.Number("eps", "0.000001");
        b.Check(group > 0 && last.Constant % group == 0, $"group {group} does not divide the {last} features of '{x.Name}'", "group");
        b.Check(scale.Shape.Count == 1 && scale.Shape[0] == group,
            $"scale '{scale.LocalName}' {ShapeRules.Text(scale.Shape)} must be [{group}]", "scale");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.RmsNorm({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, {e.Weight(op.Weights["scale"]!)}, " +
               $"{op.Attributes["group"].ToInteger("group")}, {e.Float(op.Attributes["eps"].Number!.Value)});");

    public override bool HasBackward => true;

    /// <summary>dx; a trainable norm also adds dScale += Σ dy·x·r when the run trains its scale.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var scale = op.Weights["scale"]!;
        string group = op.Attributes["group"].ToInteger("group").ToString(), eps = e.Float(op.Attributes["eps"].Number!.Value);
        if (op.IsTrainable)
            e.Line($"if (WeightGradient({e.WeightKey(scale)}) is {{ }} {e.GradientVariable(scale)}) FullBackward.RmsNormScaleBackward({e.GradientVariable(scale)}, {e.Gradient(op.Outputs[0])}, {e.View(x)}, {group}, {eps});");
        if (!e.NeedsGradient(x)) return;
        string dx = e.Temporary(x);
        e.Line($"Backward.RmsNormBackward({dx}, {e.Gradient(op.Outputs[0])}, {e.View(x)}, {e.Weight(scale)}, {group}, {eps});");
        e.Accumulate(x, dx);
    }
}
