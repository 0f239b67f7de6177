using System.Collections.Generic;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>Checks that a per-sample vector [B, C] can broadcast over a sequence [B, L, C].</summary>
internal static class Broadcast
{
    public static void CheckPerSample(OpBinder b, BoundValue x, BoundValue vector, string argument)
    {
        b.Check(x.Shape.Count == 3, $"'{x.Name}' must be [batch, tokens, features], it is {x.ShapeText}", argument);
        b.Check(vector.Shape.Count == 2 && vector.Shape[0].Equals(x.Shape[0]) && vector.Shape[1].Equals(x.Shape[2]),
            $"'{vector.Name}' {vector.ShapeText} must be [{x.Shape[0]}, {x.Shape[2]}] to broadcast over '{x.Name}' {x.ShapeText}", argument);
    }

    /// <summary>The vector's view repeated over the sequence's tokens.</summary>
    public static string OverTokens(IForwardEmitter e, BoundValue vector, BoundValue sequence) =>
        $"{e.View(vector)}.BroadcastRows({e.Dim(sequence.Shape[1])})";
}

/// <summary>Adaptive-norm modulation: (1 + scale)·x + shift, shift and scale per sample.</summary>
public sealed class ModulateOp : OpDefinition
{
    public override string Name => "modulate";
    public override string Signature => "x [B, L, C], shift [B, C], scale [B, C]";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        Broadcast.CheckPerSample(b, x, b.Value("shift"), "shift");
        Broadcast.CheckPerSample(b, x, b.Value("scale"), "scale");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        e.Line($"_backend.Modulate({e.View(op.Outputs[0])}, {e.View(x)}, {Broadcast.OverTokens(e, op.Values["shift"], x)}, " +
               $"{Broadcast.OverTokens(e, op.Values["scale"], x)});");
    }

    public override bool HasBackward => true;

    /// <summary>dx = dy·(1 + scale), dshift = Σ_tokens dy, dscale = Σ_tokens dy·x.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var shift = op.Values["shift"];
        var scale = op.Values["scale"];
        string dx = e.Temporary(x), dShift = e.Temporary(shift), dScale = e.Temporary(scale);
        e.Line($"Backward.ModulateBackward({dx}, {dShift}, {dScale}, {e.Gradient(op.Outputs[0])}, {e.View(x)}, {Broadcast.OverTokens(e, scale, x)});");
        e.Accumulate(x, dx);
        e.Accumulate(shift, dShift);
        e.Accumulate(scale, dScale);
    }
}

/// <summary>residual + gate·x, gate per sample.</summary>
public sealed class GatedResidualOp : OpDefinition
{
    public override string Name => "gated_residual";
    public override string Signature => "residual [B, L, C], x [B, L, C], gate [B, C]";
    public override string? AliasableInput => "residual";

    public override void Bind(OpBinder b)
    {
        var residual = b.Value("residual");
        var x = b.Value("x");
        b.Check(ShapeRules.Same(residual.Shape, x.Shape), $"'{x.Name}' {x.ShapeText} must match residual '{residual.Name}' {residual.ShapeText}", "x");
        Broadcast.CheckPerSample(b, residual, b.Value("gate"), "gate");
        b.Outputs(residual.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var residual = op.Values["residual"];
        e.Line($"_backend.GatedResidual({e.View(op.Outputs[0])}, {e.View(residual)}, {e.View(op.Values["x"])}, " +
               $"{Broadcast.OverTokens(e, op.Values["gate"], residual)});");
    }

    public override bool HasBackward => true;

    /// <summary>The residual stream passes dy through; dx = dy·gate, dgate = Σ_tokens dy·x.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var residual = op.Values["residual"];
        var x = op.Values["x"];
        var gate = op.Values["gate"];
        string dy = e.Gradient(op.Outputs[0]);
        string dx = e.Temporary(x), dGate = e.Temporary(gate);
        e.Line($"Backward.GatedResidualBackward({dx}, {dGate}, {dy}, {e.View(x)}, {Broadcast.OverTokens(e, gate, residual)});");
        e.Accumulate(x, dx);
        e.Accumulate(gate, dGate);
        e.PassGradient(residual, op.Outputs[0]);
    }
}

/// <summary>An elementwise op of two values of one shape, a and b; the output may reuse a.</summary>
public abstract class SameShapePairOp : OpDefinition
{
    public override string Signature => "a, b (same shape)";
    public override string? AliasableInput => "a";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("a");
        var y = b.Value("b");
        b.Check(ShapeRules.Same(x.Shape, y.Shape), $"'{x.Name}' {x.ShapeText} and '{y.Name}' {y.ShapeText} differ", "b");
        b.Outputs(x.Shape);
    }
}

public sealed class AddOp : SameShapePairOp
{
    public override string Name => "add";

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.Add({e.View(op.Outputs[0])}, {e.View(op.Values["a"])}, {e.View(op.Values["b"])});");

    public override bool HasBackward => true;

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        e.AccumulateView(op.Values["b"], e.Gradient(op.Outputs[0]));
        e.PassGradient(op.Values["a"], op.Outputs[0]);
    }
}

/// <summary>Activations of one input: the backend method named after them.</summary>
public abstract class ActivationOp : OpDefinition
{
    public override string Signature => "x";
    public override string? AliasableInput => "x";
    protected abstract string BackendMethod { get; }

    public override void Bind(OpBinder b) => b.Outputs(b.Value("x").Shape);

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.{BackendMethod}({e.View(op.Outputs[0])}, {e.View(op.Values["x"])});");

    public override bool HasBackward => true;

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        string dx = e.Temporary(x);
        e.Line($"Backward.{BackendMethod}Backward({dx}, {e.Gradient(op.Outputs[0])}, {e.View(x)});");
        e.Accumulate(x, dx);
    }
}

public sealed class SiluOp : ActivationOp
{
    public override string Name => "silu";
    protected override string BackendMethod => "Silu";
}

public sealed class GeluTanhOp : ActivationOp
{
    public override string Name => "gelu_tanh";
    protected override string BackendMethod => "GeluTanh";
}
