using System.Collections.Generic;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>Splits along the feature or token axis into views of the input (no copy).</summary>
public sealed class SplitOp : OpDefinition
{
    public override string Name => "split";
    public override string Signature => "x, axis, parts (equal) | sizes (list)";
    public override bool OutputsAreViews => true;

    public override void Bind(OpBinder b)
    {
        var x = b.Value("x");
        int axis = b.Axis("axis", x.Shape.Count);
        b.Check(axis >= x.Shape.Count - 2, $"only the last two axes can be split (axis {axis} of rank {x.Shape.Count})", "axis");
        var sizes = new List<SymbolicDim>();
        if (b.Has("sizes"))
            sizes.AddRange(b.DimList("sizes"));
        else
        {
            long parts = b.Integer("parts");
            var whole = x.Shape[axis];
            b.Check(parts > 0 && whole.IsConstant && whole.Constant % parts == 0, $"{whole} cannot be split into {parts} equal parts", "parts");
            for (int i = 0; i < parts; i++) sizes.Add(SymbolicDim.Of(whole.Constant / parts));
        }
        var total = sizes.Aggregate(SymbolicDim.Of(0), (acc, d) => acc + d);
        b.Check(total.Equals(x.Shape[axis]), $"sizes add up to {total} but axis {axis} of '{x.Name}' {x.ShapeText} is {x.Shape[axis]}", "sizes");
        b.Outputs(sizes.Select(s => ShapeRules.WithAxis(x.Shape, axis, s)).ToList(), x);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        int axis = Normalise(op, x);
        var offset = SymbolicDim.Of(0);
        foreach (var output in op.Outputs)
        {
            string method = axis == x.Shape.Count - 1 ? "Columns" : "RowRange";
            e.Assign(output, $"{e.View(x)}.{method}({e.Dim(offset)}, {e.Dim(output.Shape[axis])})");
            offset += output.Shape[axis];
        }
    }

    public override bool HasBackward => true;

    /// <summary>Nothing: the parts' gradients are slices of the whole's gradient.</summary>
    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
    }

    /// <summary>Where an output of this split lies in its input: "Columns(offset, count)" or "RowRange(offset, count)".</summary>
    internal static string SliceOf(BoundOp op, BoundValue output, IForwardEmitter e)
    {
        var x = op.Values["x"];
        int axis = Normalise(op, x);
        var offset = SymbolicDim.Of(0);
        foreach (var part in op.Outputs)
        {
            if (part == output) break;
            offset += part.Shape[axis];
        }
        string method = axis == x.Shape.Count - 1 ? "Columns" : "RowRange";
        return $"{method}({e.Dim(offset)}, {e.Dim(output.Shape[axis])})";
    }

    internal static int Normalise(BoundOp op, BoundValue x)
    {
        long axis = op.Attributes["axis"].ToInteger("axis");
        return (int)(axis < 0 ? axis + x.Shape.Count : axis);
    }
}

/// <summary>Concatenates along the feature or token axis into a new tensor.</summary>
public sealed class ConcatOp : OpDefinition
{
    public override string Name => "concat";
    public override string Signature => "xs (list of values), axis";

    public override void Bind(OpBinder b)
    {
        var xs = b.ValueList("xs");
        var first = xs[0];
        int axis = b.Axis("axis", first.Shape.Count);
        b.Check(axis >= first.Shape.Count - 2, $"only the last two axes can be concatenated (axis {axis} of rank {first.Shape.Count})", "axis");
        foreach (var x in xs.Skip(1))
            b.Check(x.Shape.Count == first.Shape.Count && x.Shape.Select((d, i) => i == axis || d.Equals(first.Shape[i])).All(ok => ok),
                $"'{x.Name}' {x.ShapeText} does not fit '{first.Name}' {first.ShapeText} outside axis {axis}", "xs");
        var total = xs.Aggregate(SymbolicDim.Of(0), (acc, x) => acc + x.Shape[axis]);
        b.Outputs(ShapeRules.WithAxis(first.Shape, axis, total));
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var output = op.Outputs[0];
        int axis = SplitOp.Normalise(op, op.ValueLists["xs"][0]);
        string method = axis == output.Shape.Count - 1 ? "Columns" : "RowRange";
        var offset = SymbolicDim.Of(0);
        foreach (var x in op.ValueLists["xs"])
        {
            e.Line($"_backend.Copy({e.View(output)}.{method}({e.Dim(offset)}, {e.Dim(x.Shape[axis])}), {e.View(x)});");
            offset += x.Shape[axis];
        }
    }

    public override bool HasBackward => true;

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
        var output = op.Outputs[0];
        int axis = SplitOp.Normalise(op, op.ValueLists["xs"][0]);
        string method = axis == output.Shape.Count - 1 ? "Columns" : "RowRange";
        string dy = e.Gradient(output);
        var offset = SymbolicDim.Of(0);
        foreach (var x in op.ValueLists["xs"])
        {
            e.AccumulateView(x, $"{dy}.{method}({e.Dim(offset)}, {e.Dim(x.Shape[axis])})");
            offset += x.Shape[axis];
        }
    }
}

/// <summary>Hands a value to the caller's observer under a name (block outputs for parity checks, debugging).</summary>
public sealed class TapOp : OpDefinition
{
    public override string Name => "tap";
    public override string Signature => "x, name (may contain the block index, \"double_blocks.{i}.img\")";

    public override void Bind(OpBinder b)
    {
        b.Value("x");
        b.Text("name");
        b.Outputs(new IReadOnlyList<SymbolicDim>[0], null);
    }

    public override void EmitForward(BoundOp op, IForwardEmitter e)
    {
        var x = op.Values["x"];
        e.Line($"Observe(observer, $\"{op.Texts["name"]}\", {e.View(x)}, {e.ShapeArray(x.Shape)});");
    }

    public override bool HasBackward => true;

    public override void EmitBackward(BoundOp op, IBackwardEmitter e)
    {
    }
}
