using System.Collections.Generic;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>
/// Images are channels-last tensors [B, H, W, C] in the graph; backends see them as [B, H·W, C] token views,
/// so a 1×1 conv is a GEMM and attention over pixels is ordinary attention.
/// </summary>
internal static class Images
{
    public static void CheckImage(OpBinder b, BoundValue x, string argument) =>
        b.Check(x.Shape.Count == 4, $"'{x.Name}' must be a channels-last image [B, H, W, C], it is {x.ShapeText}", argument);

    /// <summary>The [B, H·W, C] view of a contiguous channels-last image.</summary>
    public static string Tokens(IForwardEmitter e, BoundValue image) => Tokens(e, e.View(image), image.Shape);

    public static string Tokens(IForwardEmitter e, string view, IReadOnlyList<SymbolicDim> shape) =>
        $"{view}.Reshape({e.Dim(shape[0])}, ({e.Dim(shape[1])}) * ({e.Dim(shape[2])}), {e.Dim(shape[3])})";
}

/// <summary>2-D convolution of a channels-last image with a PyTorch weight [Cout, Cin, kh, kw], zero padding.</summary>
public sealed class Conv2dOp : OpDefinition
{
    public override string Name => "conv2d";
    public override string Signature => "x [B, H, W, Cin], weight [Cout, Cin, kh, kw], bias? [Cout], stride = 1, padding = 0 | [top, left, bottom, right]";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        Images.CheckImage(b, x, "x");
        var w = b.Weight("weight");
        var bias = b.OptionalWeight("bias");
        long stride = b.Integer("stride", "1");
        var padding = Padding(b);
        b.Check(w.Shape.Count == 4, $"weight '{w.LocalName}' must be [Cout, Cin, kh, kw], it is {ShapeRules.Text(w.Shape)}", "weight");
        b.Check(x.Shape[3].Equals(SymbolicDim.Of(w.Shape[1])),
            $"'{x.Name}' {x.ShapeText} has {x.Shape[3]} channels but weight '{w.LocalName}' {ShapeRules.Text(w.Shape)} takes {w.Shape[1]}", "x");
        if (bias != null)
            b.Check(bias.Shape.Count == 1 && bias.Shape[0] == w.Shape[0], $"bias '{bias.LocalName}' must be [{w.Shape[0]}]", "bias");
        b.Check(stride >= 1, "stride must be at least 1", "stride");
        var height = Output(b, x.Shape[1], padding[0] + padding[2], w.Shape[2], stride, "height");
        var width = Output(b, x.Shape[2], padding[1] + padding[3], w.Shape[3], stride, "width");
        b.Outputs(new[] { x.Shape[0], height, width, SymbolicDim.Of(w.Shape[0]) });
    }

    private static long[] Padding(OpBinder b)
    {
        if (!b.Has("padding")) return new long[4];
        var value = b.Attribute("padding");
        if (value.List != null)
        {
            b.Check(value.List.Count == 4, "padding must be one number or [top, left, bottom, right]", "padding");
            return value.List.Select(v => (long)v).ToArray();
        }
        long p = b.Integer("padding");
        return new[] { p, p, p, p };
    }

    private static SymbolicDim Output(OpBinder b, SymbolicDim size, long padding, long kernel, long stride, string what)
    {
        var span = size + SymbolicDim.Of(padding - kernel);
        var steps = span.FloorDivide(stride);
        b.Check(steps != null, $"the output {what} ({size} + {padding} − {kernel}) / {stride} is not linear in the runtime sizes", "stride");
        return steps! + SymbolicDim.Of(1);
    }

    private static string PaddingOf(BoundOp op)
    {
        var p = op.Attributes.TryGetValue("padding", out var padding)
            ? padding.List?.Select(v => (long)v).ToArray() ?? Enumerable.Repeat((long)padding.Number!.Value, 4).ToArray()
            : new long[4];
        return $"new Padding2d({p[0]}, {p[1]}, {p[2]}, {p[3]})";
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        e.Line($"_backend.Conv2d({Images.Tokens(e, op.Outputs[0])}, {Images.Tokens(e, x)}, {e.Dim(x.Shape[1])}, {e.Dim(x.Shape[2])}, " +
               $"{e.Weight(op.Weights["weight"]!)}, {e.WeightOrNull(op.Weights["bias"])}, {op.Attributes["stride"].ToInteger("stride")}, " +
               $"{PaddingOf(op)});");
    }

    public override bool HasBackward => true;

    /// <summary>dx by the transposed convolution; a trainable conv also adds dW (im2col) and db = Σ dy when the run trains them.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var y = op.Outputs[0];
        var weight = op.Weights["weight"]!;
        string dy = Images.Tokens(e, e.Gradient(y), y.Shape);
        string geometry = $"{e.Dim(x.Shape[1])}, {e.Dim(x.Shape[2])}";
        string stride = op.Attributes["stride"].ToInteger("stride").ToString();
        if (op.IsTrainable)
        {
            string dw = e.GradientVariable(weight);
            e.Line($"if (WeightGradient({e.WeightKey(weight)}) is {{ }} {dw}) FullBackward.Conv2dBackwardWeight({dw}, {dy}, {Images.Tokens(e, x)}, {geometry}, {stride}, {PaddingOf(op)});");
            if (op.Weights["bias"] is { } bias)
            {
                string db = e.GradientVariable(bias);
                e.Line($"if (WeightGradient({e.WeightKey(bias)}) is {{ }} {db}) Backward.SumRows({db}.AsView().Reshape(1, 1, {db}.Shape[0]), {dy}, 1f);");
            }
        }
        if (!e.NeedsGradient(x)) return;
        string dx = e.Temporary(x);
        e.Line($"FullBackward.Conv2dBackwardInput({Images.Tokens(e, dx + ".AsView()", x.Shape)}, {dy}, {geometry}, {e.Weight(weight)}, {stride}, {PaddingOf(op)});");
        e.Accumulate(x, dx);
    }
}

/// <summary>GroupNorm over (pixels × channels of a group) of a channels-last image, with per-channel affine.</summary>
public sealed class GroupNormOp : OpDefinition
{
    public override string Name => "group_norm";
    public override string Signature => "x [B, H, W, C], groups, scale? [C], bias? [C], eps = 1e-6";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        Images.CheckImage(b, x, "x");
        long groups = b.Integer("groups");
        var scale = b.OptionalWeight("scale");
        var bias = b.OptionalWeight("bias");
        b.Number("eps", "0.000001");
        var channels = x.Shape[3];
        b.Check(channels.IsConstant && groups > 0 && channels.Constant % groups == 0, $"{groups} groups do not divide {channels} channels", "groups");
        foreach (var w in new[] { scale, bias })
            if (w != null) b.Check(w.Shape.Count == 1 && w.Shape[0] == channels.Constant, $"'{w.LocalName}' must be [{channels}]", "x");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.GroupNorm({Images.Tokens(e, op.Outputs[0])}, {Images.Tokens(e, op.Values["x"])}, {op.Attributes["groups"].ToInteger("groups")}, " +
               $"{e.WeightOrNull(op.Weights["scale"])}, {e.WeightOrNull(op.Weights["bias"])}, {e.Float(op.Attributes["eps"].Number!.Value)});");

    public override bool HasBackward => true;

    /// <summary>One kernel for dx and, when trainable and asked for, dScale and dBias (the statistics are shared).</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        string dy = Images.Tokens(e, e.Gradient(op.Outputs[0]), op.Outputs[0].Shape);
        string Parameter(string argument) =>
            op.IsTrainable && op.Weights[argument] is { } weight ? $"WeightGradient({e.WeightKey(weight)})" : "null";
        string? dx = e.NeedsGradient(x) ? e.Temporary(x) : null;
        e.Line($"FullBackward.GroupNormBackward({(dx == null ? "null" : Images.Tokens(e, dx + ".AsView()", x.Shape))}, {Parameter("scale")}, {Parameter("bias")}, {dy}, " +
               $"{Images.Tokens(e, x)}, {op.Attributes["groups"].ToInteger("groups")}, {e.WeightOrNull(op.Weights["scale"])}, {e.Float(op.Attributes["eps"].Number!.Value)});");
        if (dx != null) e.Accumulate(x, dx);
    }
}

/// <summary>Nearest-neighbour ×2 upsampling of a channels-last image.</summary>
public sealed class UpsampleNearest2xOp : OpDefinition
{
    public override string Name => "upsample_nearest2x";
    public override string Signature => "x [B, H, W, C]";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        Images.CheckImage(b, x, "x");
        b.Outputs(new[] { x.Shape[0], x.Shape[1].Times(2), x.Shape[2].Times(2), x.Shape[3] });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        e.Line($"_backend.UpsampleNearest2x({Images.Tokens(e, op.Outputs[0])}, {Images.Tokens(e, x)}, {e.Dim(x.Shape[1])}, {e.Dim(x.Shape[2])});");
    }

    public override bool HasBackward => true;

    /// <summary>Each pixel's gradient is the sum of its four copies'.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        string dx = e.Temporary(x);
        e.Line($"FullBackward.UpsampleNearest2xBackward({Images.Tokens(e, dx + ".AsView()", x.Shape)}, {Images.Tokens(e, e.Gradient(op.Outputs[0]), op.Outputs[0].Shape)}, " +
               $"{e.Dim(x.Shape[1])}, {e.Dim(x.Shape[2])});");
        e.Accumulate(x, dx);
    }
}

/// <summary>[B, C, H, W] (PyTorch's layout) → channels-last [B, H, W, C], or back.</summary>
public sealed class ChannelsLayoutOp : OpDefinition
{
    private readonly bool _toLast;

    public ChannelsLayoutOp(bool toLast) => _toLast = toLast;

    public override string Name => _toLast ? "to_channels_last" : "to_channels_first";
    public override string Signature => _toLast ? "x [B, C, H, W]" : "x [B, H, W, C]";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        b.Check(x.Shape.Count == 4, $"'{x.Name}' must have rank 4, it is {x.ShapeText}", "x");
        var s = x.Shape;
        b.Outputs(_toLast ? new[] { s[0], s[2], s[3], s[1] } : new[] { s[0], s[3], s[1], s[2] });
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        var y = op.Outputs[0];
        // Per sample, a [C, H·W] ↔ [H·W, C] transpose.
        var planar = _toLast ? x : y;
        var last = _toLast ? y : x;
        string planarView = $"{e.View(planar)}.Reshape({e.Dim(planar.Shape[0])}, {e.Dim(planar.Shape[1])}, ({e.Dim(planar.Shape[2])}) * ({e.Dim(planar.Shape[3])}))";
        string lastView = Images.Tokens(e, last);
        e.Line(_toLast ? $"_backend.Transpose({lastView}, {planarView});" : $"_backend.Transpose({planarView}, {lastView});");
    }

    public override bool HasBackward => true;

    /// <summary>A permutation: the gradient goes back through the inverse transpose.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        var y = op.Outputs[0];
        string dx = e.Temporary(x);
        string dxView = dx + ".AsView()", dyView = e.Gradient(y);
        string Planar(string view, IReadOnlyList<SymbolicDim> shape) =>
            $"{view}.Reshape({e.Dim(shape[0])}, {e.Dim(shape[1])}, ({e.Dim(shape[2])}) * ({e.Dim(shape[3])}))";
        e.Line(_toLast
            ? $"_backend.Transpose({Planar(dxView, x.Shape)}, {Images.Tokens(e, dyView, y.Shape)});"
            : $"_backend.Transpose({Images.Tokens(e, dxView, x.Shape)}, {Planar(dyView, y.Shape)});");
        e.Accumulate(x, dx);
    }
}

/// <summary>y = scale·x + shift with constants (the VAE's latent scaling).</summary>
public sealed class ScaleShiftOp : OpDefinition
{
    public override string Name => "scale_shift";
    public override string Signature => "x, scale, shift";
    public override string? AliasableInput => "x";

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        b.Number("scale");
        b.Number("shift");
        b.Outputs(x.Shape);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e) =>
        e.Line($"_backend.ScaleShift({e.View(op.Outputs[0])}, {e.View(op.Values["x"])}, " +
               $"{e.Float(op.Attributes["scale"].Number!.Value)}, {e.Float(op.Attributes["shift"].Number!.Value)});");

    public override bool HasBackward => true;

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var x = op.Values["x"];
        string dx = e.Temporary(x);
        e.Line($"_backend.ScaleShift({dx}, {e.Gradient(op.Outputs[0])}, {e.Float(op.Attributes["scale"].Number!.Value)}, 0f);");
        e.Accumulate(x, dx);
    }
}
