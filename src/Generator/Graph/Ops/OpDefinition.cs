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

    /// <summary>
    /// True when the op reads its weights only as the matrix of a product (Linear and the products of its backward),
    /// the one use a backend's quantized blocks serve; any other reader (an embedding lookup, a convolution) needs floats.
    /// </summary>
    public virtual bool ReadsWeightsAsProducts => false;

    /// <summary>True when the outputs are views of an input's memory (nothing is allocated or computed).</summary>
    public virtual bool OutputsAreViews => false;

    /// <summary>Resolves arguments, checks shapes and declares outputs.</summary>
    public abstract void Bind(OpBinder binder);

    /// <summary>Writes the statements that compute the outputs, whose views are already allocated.</summary>
    public abstract void EmitForward(BoundOp op, IForwardEmitter emitter);

    /// <summary>Whether the op has a backward rule (the training pass refuses graphs whose gradients cross one without).</summary>
    public virtual bool HasBackward => false;

    /// <summary>Whether this use of the op has a backward rule (an op may lack one only for some arguments).</summary>
    public virtual bool HasBackwardFor(BoundOp op) => HasBackward;

    /// <summary>
    /// The backward rule: from the outputs' gradients, add each input's gradient (inputs that need none are
    /// skipped by the emitter) and, for trainable layers, the parameters' gradients. Activation gradients are
    /// computed into temporaries and accumulated, so a value read by several ops sums their contributions.
    /// </summary>
    public virtual void EmitBackward(BoundOp op, IBackwardEmitter emitter) =>
        throw new System.NotSupportedException($"op '{Name}' has no backward rule");
}

/// <summary>What a backward rule may ask for, beyond the forward's views, weights and sizes.</summary>
public interface IBackwardEmitter : IForwardEmitter
{
    bool NeedsGradient(BoundValue value);

    /// <summary>The gradient of an op's output, as a view.</summary>
    string Gradient(BoundValue output);

    /// <summary>A new, uninitialised tensor shaped like the value (its variable name), for a rule to write into.</summary>
    string Temporary(BoundValue like);

    /// <summary>Adds a temporary's contents to the value's gradient (taking the temporary over when it is the first).</summary>
    void Accumulate(BoundValue input, string temporary);

    /// <summary>Adds a view (an output's gradient, a slice of it) to the value's gradient.</summary>
    void AccumulateView(BoundValue input, string view);

    /// <summary>
    /// Adds the output's whole gradient to the input's, unchanged (a residual stream). Call it last in a rule: where the
    /// input has no gradient yet, the output's buffer is handed over instead of copied, and the output's gradient is
    /// then the input's.
    /// </summary>
    void PassGradient(BoundValue input, BoundValue output);

    /// <summary>The forward's x·Aᵀ of a trainable linear layer (null when it has no adapter at run time).</summary>
    string LoraDown(BoundOp op);

    /// <summary>The module key of a trainable linear layer, as C# text (with the block index where it has one).</summary>
    string ModuleKey(BoundWeight weight);

    /// <summary>A weight's checkpoint key as C# text.</summary>
    string WeightKey(BoundWeight weight);

    /// <summary>A fresh local name for a weight's gradient buffer ("dScale3"), for a rule's `is { } name` test.</summary>
    string GradientVariable(BoundWeight weight);
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
        new EmbeddingOp(), new PositionEmbeddingOp(), new QuickGeluOp(), new MulOp(), new RelativePositionBiasOp(), new ArgmaxPoolOp(),
    }.ToDictionary(op => op.Name);
}
