using System.Collections.Generic;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

/// <summary>
/// One op of the schema language: how its arguments bind and its shapes follow (graph stage), and the
/// backend call it becomes (emit stage). Each op lives in one small class so its rules read together.
/// </summary>
public abstract class OpDefinition
{
    public abstract string Name { get; }

    /// <summary>One line for docs and errors: the op's arguments.</summary>
    public abstract string Signature { get; }

    /// <summary>The value argument whose memory the output may reuse when the schema writes back to its name.</summary>
    public virtual string? AliasableInput => null;

    /// <summary>True when the outputs are views of an input's memory (nothing is allocated or computed).</summary>
    public virtual bool OutputsAreViews => false;

    /// <summary>Resolves arguments, checks shapes and declares outputs.</summary>
    public abstract void Bind(OpBinder binder);

    /// <summary>Writes the statements that compute the outputs, whose views are already allocated.</summary>
    public abstract void EmitForward(BoundOp op, IForwardEmitter emitter);
}

/// <summary>What an op's emitter may ask for: C# expressions for views, weights and sizes, and a place to write.</summary>
public interface IForwardEmitter
{
    string View(BoundValue value);
    string Weight(BoundWeight weight);
    string WeightOrNull(BoundWeight? weight);
    string Dim(SymbolicDim dim);
    string Float(double value);
    string ShapeArray(IReadOnlyList<SymbolicDim> shape);

    /// <summary>Defines an output that is a view expression of another value (no allocation).</summary>
    void Assign(BoundValue output, string viewExpression);

    void Line(string code);
}

public static class OpCatalog
{
    public static readonly IReadOnlyDictionary<string, OpDefinition> All = new OpDefinition[]
    {
        new LinearOp(), new LayerNormOp(), new RmsNormOp(), new ModulateOp(), new GatedResidualOp(), new AddOp(),
        new SiluOp(), new GeluTanhOp(), new TimestepEmbeddingOp(), new RopeEmbedOp(), new RopeOp(), new AttentionOp(),
        new SplitOp(), new ConcatOp(), new TapOp(),
        new Conv2dOp(), new GroupNormOp(), new UpsampleNearest2xOp(), new ChannelsLayoutOp(toLast: true),
        new ChannelsLayoutOp(toLast: false), new ScaleShiftOp(),
    }.ToDictionary(op => op.Name);
}
