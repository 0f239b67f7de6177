using System;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>Sinusoidal embedding of one scalar per sample: [cos | sin] of t·time_factor·freq.</summary>
public sealed class TimestepEmbeddingOp : OpDefinition
{
    public override string Name => "timestep_embedding";
    public override string Signature => "t [B], dim, time_factor = 1000, max_period = 10000";

    public override void Bind(OpBinder b)
    {
        var t = b.Value("t");
        long dim = b.Integer("dim");
        b.Number("time_factor", "1000");
        b.Number("max_period", "10000");
        b.Check(t.Shape.Count == 1, $"t '{t.Name}' must be one scalar per sample, it is {t.ShapeText}", "t");
        b.Check(dim > 0 && dim % 2 == 0, $"dim {dim} must be even", "dim");
        b.Outputs(new[] { t.Shape[0], SymbolicDim.Of(dim) });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var t = op.Values["t"];
        e.Line($"_backend.TimestepEmbedding({e.View(op.Outputs[0])}, {e.View(t)}.Reshape(1, {e.Dim(t.Shape[0])}, 1), " +
               $"{e.Float(op.Attributes["time_factor"].Number!.Value)}, {e.Float(op.Attributes["max_period"].Number!.Value)});");
    }
}

/// <summary>RoPE rotation matrices [B, L, Σaxes/2, 2, 2] from per-token position ids, one frequency band per axis.</summary>
public sealed class RopeEmbedOp : OpDefinition
{
    public override string Name => "rope_embed";
    public override string Signature => "ids [B, L, axes], axes_dim (int list), theta";

    public override void Bind(OpBinder b)
    {
        var ids = b.Value("ids");
        var axes = b.List("axes_dim");
        b.Number("theta");
        b.Check(ids.Shape.Count == 3, $"ids '{ids.Name}' must be [B, L, axes], it is {ids.ShapeText}", "ids");
        b.Check(ids.Shape[2].Equals(SymbolicDim.Of(axes.Count)), $"ids '{ids.Name}' {ids.ShapeText} must have one column per axis ({axes.Count})", "ids");
        b.Check(axes.All(a => a > 0 && a % 2 == 0 && Math.Abs(a - Math.Round(a)) < 1e-9), "every axes_dim entry must be a positive even integer", "axes_dim");
        long pairs = (long)axes.Sum() / 2;
        b.Outputs(new[] { ids.Shape[0], ids.Shape[1], SymbolicDim.Of(pairs), SymbolicDim.Of(2), SymbolicDim.Of(2) });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var ids = op.Values["ids"];
        var axes = op.Attributes["axes_dim"].List!;
        long pairs = (long)axes.Sum() / 2;
        e.Line($"_backend.RopeEmbed({e.View(op.Outputs[0])}.Reshape({e.Dim(ids.Shape[0])}, {e.Dim(ids.Shape[1])}, {pairs * 4}), {e.View(ids)}, " +
               $"new[] {{ {string.Join(", ", axes.Select(a => ((long)a).ToString()))} }}, {e.Float(op.Attributes["theta"].Number!.Value)});");
    }
}

/// <summary>Rotates interleaved pairs of every head of x by the RoPE matrices pe.</summary>
public sealed class RopeOp : OpDefinition
{
    public override string Name => "rope";
    public override string Signature => "x [B, L, heads·head_dim], pe [B, L, head_dim/2, 2, 2]";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        var pe = b.Value("pe");
        b.Check(x.Shape.Count == 3, $"x '{x.Name}' must be [B, L, features], it is {x.ShapeText}", "x");
        b.Check(pe.Shape.Count == 5 && pe.Shape[0].Equals(x.Shape[0]) && pe.Shape[1].Equals(x.Shape[1]) && pe.Shape[2].IsConstant,
            $"pe '{pe.Name}' {pe.ShapeText} must be [{x.Shape[0]}, {x.Shape[1]}, head_dim/2, 2, 2] for x '{x.Name}' {x.ShapeText}", "pe");
        long headDim = pe.Shape[2].Constant * 2;
        b.Check(x.Shape[2].IsConstant && x.Shape[2].Constant % headDim == 0,
            $"the {x.Shape[2]} features of '{x.Name}' are not whole heads of {headDim} (from pe)", "x");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        var pe = op.Values["pe"];
        long pairs = pe.Shape[2].Constant;
        e.Line($"_backend.ApplyRope({e.View(op.Outputs[0])}, {e.View(x)}, {e.View(pe)}.Reshape({e.Dim(pe.Shape[0])}, {e.Dim(pe.Shape[1])}, {pairs * 4}), {pairs * 2});");
    }

    public override bool HasBackward => true;

    /// <summary>The rotation is orthogonal: dx is dy rotated back. pe comes from the ids (no gradient).</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var pe = op.Values["pe"];
        long pairs = pe.Shape[2].Constant;
        string dx = e.Temporary(x);
        e.Line($"Backward.ApplyRopeBackward({dx}, {e.Gradient(op.Outputs[0])}, {e.View(pe)}.Reshape({e.Dim(pe.Shape[0])}, {e.Dim(pe.Shape[1])}, {pairs * 4}), {pairs * 2});");
        e.Accumulate(x, dx);
    }
}

/// <summary>
/// Multi-head scaled dot-product attention; heads concatenated in the features. Images [B, H, W, C] attend over their
/// H·W pixels (the VAE's single-head mid attention). Sequences may add a per-head score bias [heads, Lq, Lk] (T5's
/// relative positions, the same for every sample) and a causal mask (CLIP's text tower); those two have no backward
/// rule yet.
/// </summary>
public sealed class AttentionOp : OpDefinition
{
    public override string Name => "attention";
    public override string Signature => "q [B, Lq, C] or [B, H, W, C], k, v [B, Lk, C] (or images like q), heads, scale = 1/sqrt(C/heads), bias? [heads, Lq, Lk], causal = false";

    public override void Bind(OpBinder b)
    {
        var q = b.Value("q");
        var k = b.Value("k");
        var v = b.Value("v");
        long heads = b.Integer("heads");
        b.Check(q.Shape.Count == 3 || q.Shape.Count == 4, $"q '{q.Name}' must be [B, L, features] or an image [B, H, W, C], it is {q.ShapeText}", "q");
        b.Check(ShapeRules.Same(k.Shape, v.Shape), $"k '{k.Name}' {k.ShapeText} and v '{v.Name}' {v.ShapeText} differ", "v");
        if (q.Shape.Count == 4)
            b.Check(ShapeRules.Same(q.Shape, k.Shape), $"image attention needs q, k, v of one shape; k '{k.Name}' is {k.ShapeText}", "k");
        else
            b.Check(k.Shape.Count == 3 && k.Shape[0].Equals(q.Shape[0]) && k.Shape[2].Equals(q.Shape[2]),
                $"k '{k.Name}' {k.ShapeText} does not fit q '{q.Name}' {q.ShapeText}", "k");
        var features = q.Shape[q.Shape.Count - 1];
        b.Check(heads > 0 && features.IsConstant && features.Constant % heads == 0,
            $"{heads} heads do not divide the {features} features of q", "heads");
        long headDim = features.Constant / heads;
        b.Number("scale", "1 / sqrt(" + headDim + ")");
        var bias = b.OptionalValue("bias");
        bool causal = b.Boolean("causal", false);
        if (bias != null || causal)
            b.Check(q.Shape.Count == 3, $"a bias or causal mask needs sequences [B, L, C]; q '{q.Name}' is {q.ShapeText}", bias != null ? "bias" : "causal");
        if (bias != null)
            b.Check(bias.Shape.Count == 3 && bias.Shape[0].Equals(SymbolicDim.Of(heads)) && bias.Shape[1].Equals(q.Shape[1]) && bias.Shape[2].Equals(k.Shape[1]),
                $"bias '{bias.Name}' {bias.ShapeText} must be [{heads}, {q.Shape[1]}, {k.Shape[1]}] (heads, queries, keys)", "bias");
        b.Outputs(q.Shape);
    }

    private static bool IsMasked(BoundOp op) => op.Values.ContainsKey("bias") || op.Attributes["causal"].Boolean == true;

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        string View(BoundValue value) => value.Shape.Count == 4 ? Images.Tokens(e, value) : e.View(value);
        if (IsMasked(op))
        {
            string bias = op.Values.TryGetValue("bias", out var b) ? e.View(b) : "null";
            e.Line($"_backend.MaskedAttention({e.View(op.Outputs[0])}, {e.View(op.Values["q"])}, {e.View(op.Values["k"])}, {e.View(op.Values["v"])}, " +
                   $"{op.Attributes["heads"].ToInteger("heads")}, {e.Float(op.Attributes["scale"].Number!.Value)}, {bias}, " +
                   $"causal: {(op.Attributes["causal"].Boolean == true ? "true" : "false")});");
            return;
        }
        e.Line($"_backend.Attention({View(op.Outputs[0])}, {View(op.Values["q"])}, {View(op.Values["k"])}, {View(op.Values["v"])}, " +
               $"{op.Attributes["heads"].ToInteger("heads")}, {e.Float(op.Attributes["scale"].Number!.Value)});");
    }

    public override bool HasBackward => true;

    public override bool HasBackwardFor(BoundOp op) => !IsMasked(op);

    /// <summary>Recomputes the softmax from q and k and returns dq, dk, dv (images as their [B, H·W, C] token views).</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var q = op.Values["q"];
        var k = op.Values["k"];
        var v = op.Values["v"];
        string dq = e.Temporary(q), dk = e.Temporary(k), dv = e.Temporary(v);
        string View(BoundValue value) => value.Shape.Count == 4 ? Images.Tokens(e, value) : e.View(value);
        string Buffer(string name, BoundValue like) => like.Shape.Count == 4 ? Images.Tokens(e, name + ".AsView()", like.Shape) : name;
        var o = op.Outputs[0];
        string dOut = o.Shape.Count == 4 ? Images.Tokens(e, e.Gradient(o), o.Shape) : e.Gradient(o);
        e.Line($"Backward.AttentionBackward({Buffer(dq, q)}, {Buffer(dk, k)}, {Buffer(dv, v)}, {dOut}, {View(q)}, {View(k)}, {View(v)}, " +
               $"{op.Attributes["heads"].ToInteger("heads")}, {e.Float(op.Attributes["scale"].Number!.Value)});");
        e.Accumulate(q, dq);
        e.Accumulate(k, dk);
        e.Accumulate(v, dv);
    }
}
