using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Parsing;

namespace InFluxEdit.Generator.Graph;

/// <summary>
/// Stage 2's result: a model's graph with every name resolved, every param folded to a constant, every
/// shape known (symbolically in the runtime sizes) and checked.
/// </summary>
public sealed class BoundModel
{
    public BoundModel(ModelFileSpec model, GraphSpec graph, IReadOnlyList<BoundWeight> weights, IReadOnlyList<BoundEntry> entries)
    {
        Model = model;
        Graph = graph;
        Weights = weights;
        Entries = entries;
    }

    public ModelFileSpec Model { get; }
    public GraphSpec Graph { get; }

    /// <summary>Every weight, in declaration order; a looped block's weights once, with their key pattern.</summary>
    public IReadOnlyList<BoundWeight> Weights { get; }

    /// <summary>The generated methods ("forward", or a VAE's "encode" and "decode"), sharing the weights.</summary>
    public IReadOnlyList<BoundEntry> Entries { get; }

    public List<BoundLoraAlias> LoraAliases { get; } = new();

    /// <summary>The "lora" section with every target resolved to the linear layers it names; null without one.</summary>
    public BoundLora? Lora { get; set; }
}

/// <summary>A graph's LoRA defaults and presets, checked against its weights.</summary>
public sealed record BoundLora(string DefaultPreset, int Rank, double Alpha, IReadOnlyList<BoundLoraPreset> Presets);

/// <summary>
/// A preset as the linear layers it trains (module keys with "{i}", in weight order): each gets one adapter, or with
/// <see cref="Split"/> one per row block of the format's split (<see cref="BoundLoraTarget.Parts"/>: which; null: all).
/// </summary>
public sealed record BoundLoraPreset(string Name, string Description, string Init, string? Split, IReadOnlyList<BoundLoraTarget> Targets);

public sealed record BoundLoraTarget(string Module, IReadOnlyList<int>? Parts);

/// <summary>
/// Rows [RowOffset, RowOffset + RowCount) of Module's weight, known to Format as Alias ({i}: the block), where they are
/// rows [AliasRowOffset, AliasRowOffset + RowCount) of the alias's own output.
/// </summary>
public sealed record BoundLoraAlias(string Format, string Alias, string Module, int RowOffset, int RowCount, int AliasRowOffset = 0);

/// <summary>One generated method: its inputs, the runtime sizes they carry, its statements and outputs.</summary>
public sealed class BoundEntry
{
    public BoundEntry(string name, IReadOnlyList<string> sizes, IReadOnlyList<BoundValue> inputs, BoundScope body, IReadOnlyList<BoundValue> outputs)
    {
        Name = name;
        Sizes = sizes;
        Inputs = inputs;
        Body = body;
        Outputs = outputs;
    }

    public string Name { get; }
    public IReadOnlyList<string> Sizes { get; }
    public IReadOnlyList<BoundValue> Inputs { get; }
    public BoundScope Body { get; }
    public IReadOnlyList<BoundValue> Outputs { get; }

    /// <summary>The inputs whose gradients the training pass hands back (the entry's "input_gradients").</summary>
    public IReadOnlyList<BoundValue> InputGradients { get; init; } = System.Array.Empty<BoundValue>();
}

/// <summary>A value of the graph: an input, an op's output, or a view of another value's memory.</summary>
public sealed class BoundValue
{
    public BoundValue(int id, string name, IReadOnlyList<SymbolicDim> shape, BoundValue? viewOf = null)
    {
        Id = id;
        Name = name;
        Shape = shape;
        ViewOf = viewOf;
        EmitName = name;
    }

    public int Id { get; }
    public string Name { get; }

    /// <summary>The name in generated code: the schema name, suffixed with the iteration in unrolled blocks.</summary>
    public string EmitName { get; init; } = "";
    public IReadOnlyList<SymbolicDim> Shape { get; }

    /// <summary>For split outputs: the value whose memory this one looks at.</summary>
    public BoundValue? ViewOf { get; }

    public BoundValue Root => ViewOf?.Root ?? this;

    /// <summary>The output of an op that failed to bind: its uses are not reported again.</summary>
    public bool IsError { get; init; }

    /// <summary>Set when a repeated block writes to a name of the enclosing scope: the next iteration reads it.</summary>
    public bool IsCarriedOutOfBlock { get; set; }

    public string ShapeText => "[" + string.Join(", ", Shape.Select(d => d.ToString())) + "]";

    public override string ToString() => $"{Name} {ShapeText}";
}

/// <summary>A weight: its checkpoint key (with "{i}" in repeated blocks), shape and the block that owns it.</summary>
public sealed class BoundWeight
{
    public BoundWeight(string key, string localName, IReadOnlyList<long> shape, BoundRepeat? block, SourceSpan span)
    {
        Key = key;
        LocalName = localName;
        Shape = shape;
        Block = block;
        Span = span;
    }

    public string Key { get; }

    /// <summary>The name inside its block ("img_attn.qkv.weight"); equals Key at top level.</summary>
    public string LocalName { get; }

    public IReadOnlyList<long> Shape { get; }
    public BoundRepeat? Block { get; }
    public SourceSpan Span { get; }
    public bool IsUsed { get; set; }

    /// <summary>Named by the graph's "unquantized" patterns: quantizing at load leaves it in its float dtype.</summary>
    public bool Unquantized { get; set; }

    /// <summary>An op other than a product reads it (an embedding table, a convolution kernel): it is always held as floats.</summary>
    public bool ReadOutsideProducts { get; set; }

    /// <summary>
    /// For a looped block's weight in a graph bound with every loop unrolled (the training pass): the loop's key
    /// prefix ("double_blocks.{i}.") and this iteration's index, so code can reach the weight in the block array.
    /// </summary>
    public (string Prefix, string Index, long Value)? Loop { get; init; }

    /// <summary>The module a linear weight belongs to: its key without ".weight".</summary>
    public string Module => Key.EndsWith(".weight") ? Key.Substring(0, Key.Length - ".weight".Length) : Key;
}

public sealed class BoundScope
{
    public List<BoundStatement> Statements { get; } = new();
}

public abstract class BoundStatement
{
    protected BoundStatement(SourceSpan span) => Span = span;
    public SourceSpan Span { get; }
}

public sealed class BoundOp : BoundStatement
{
    public BoundOp(OpDefinition definition, SourceSpan span) : base(span) => Definition = definition;

    public OpDefinition Definition { get; }
    public Dictionary<string, BoundValue> Values { get; } = new();
    public Dictionary<string, List<BoundValue>> ValueLists { get; } = new();
    public Dictionary<string, BoundWeight?> Weights { get; } = new();
    public Dictionary<string, SchemaValue> Attributes { get; } = new();
    public Dictionary<string, string> Texts { get; } = new();
    public List<BoundValue> Outputs { get; } = new();

    /// <summary>Set by the planner: the output reuses the memory of the op's aliasable input.</summary>
    public bool InPlace { get; set; }

    /// <summary>
    /// Set by the binder for an op with a weight whose module the graph's "trainable" patterns name: its backward rule
    /// adds that weight's gradient when the run asks for it (TrainingState.WeightGradients).
    /// </summary>
    public bool IsTrainable { get; set; }

    /// <summary>A trainable linear layer: LoRA adapters may act on it.</summary>
    public bool HasAdapter => IsTrainable && Definition is Ops.LinearOp;

    /// <summary>The op as a schema line with shapes, for comments in generated code.</summary>
    public string Describe()
    {
        var args = Values.Select(v => $"{v.Key}={v.Value.Name} {v.Value.ShapeText}")
            .Concat(ValueLists.Select(l => $"{l.Key}=[{string.Join(", ", l.Value.Select(v => v.Name + " " + v.ShapeText))}]"))
            .Concat(Weights.Where(w => w.Value != null).Select(w => $"{w.Key}={w.Value!.LocalName}"));
        string call = $"{Definition.Name}({string.Join(", ", args)})";
        return Outputs.Count == 0 ? call : call + " -> " + string.Join(", ", Outputs.Select(o => o.ToString()));
    }
}

/// <summary>A marker in an unrolled block ("encoder.down.1.block.0"), printed as a comment.</summary>
public sealed class BoundComment : BoundStatement
{
    public BoundComment(string text, SourceSpan span) : base(span) => Text = text;
    public string Text { get; }

    /// <summary>
    /// In a graph bound with every loop unrolled: for the marker of one iteration of a repeated block, how many of the
    /// statements after it belong to that iteration; 0 for other comments.
    /// </summary>
    public int BlockLength { get; set; }
}

public sealed class BoundRepeat : BoundStatement
{
    public BoundRepeat(long count, string index, string prefix, SourceSpan span) : base(span)
    {
        Count = count;
        Index = index;
        Prefix = prefix;
    }

    public long Count { get; }
    public string Index { get; }

    /// <summary>The key prefix with "{index}" ("double_blocks.{i}.").</summary>
    public string Prefix { get; }

    public List<BoundWeight> Weights { get; } = new();
    public BoundScope Body { get; } = new();
}
