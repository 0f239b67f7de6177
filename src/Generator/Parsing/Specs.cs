using InFluxEdit.Generator.Common;

namespace InFluxEdit.Generator.Parsing;

// The parsed schema, free of Roslyn symbols and compared by value: the incremental pipeline regenerates a
// model only when its spec (or its graph's spec) changes.

/// <summary>A model file (schemas/NAME.json): a graph and the params that size it.</summary>
public sealed record ModelFileSpec(
    string Path,
    string FileName,
    string ClassName,
    string GraphName,
    SourceSpan GraphSpan,
    string? Family,
    string? Description,
    string WeightsDType,
    EquatableArray<ParamValueSpec> Params,
    EquatableArray<SchemaDiagnostic> Diagnostics)
{
    /// <summary>Where the "model" value stands, for a diagnostic about the name itself (another file uses it too).</summary>
    public SourceSpan ClassNameSpan { get; init; }
}

/// <summary>A param's value as JSON text ("3072", "4.0", "[16, 56, 56]", "true").</summary>
public sealed record ParamValueSpec(string Name, AttributeValue Value);

/// <summary>A graph file (schemas/graphs/NAME.json): the architecture, shared by every model of its family.</summary>
public sealed record GraphSpec(
    string Path,
    string Name,
    string? Description,
    EquatableArray<ParamDeclarationSpec> Params,
    EquatableArray<LetSpec> Lets,
    EquatableArray<RequirementSpec> Requirements,
    EquatableArray<SizeSpec> Sizes,
    EquatableArray<TensorDeclarationSpec> Weights,
    EquatableArray<EntrySpec> Entries,
    EquatableArray<SchemaDiagnostic> Diagnostics)
{
    /// <summary>Other tools' names for the graph's linear layers, so their LoRA files load.</summary>
    public EquatableArray<LoraAliasSpec> LoraAliases { get; init; }

    /// <summary>
    /// Module patterns ("img_in", "double_blocks.{i}.*") whose linear layers may train (a LoRA or the whole
    /// weight): the generator then emits ForwardTrain and Backward with gradients for exactly what they need.
    /// </summary>
    public EquatableArray<string> Trainable { get; init; }

    /// <summary>The graph's LoRA presets (which layers a LoRA trains, how A starts) and defaults; null when it has none.</summary>
    public LoraSpec? Lora { get; init; }

    /// <summary>
    /// Checkpoint tensors the model does not use but published files carry ("text_projection.weight", "vision_model.*"):
    /// loading and recognition skip them instead of refusing the file.
    /// </summary>
    public EquatableArray<string> IgnoredTensors { get; init; }

    /// <summary>
    /// Module patterns ("img_in", "final_layer.*") whose weight matrices quantizing at load leaves in their float dtype:
    /// the layers every published quantized file of the model keeps unquantized.
    /// </summary>
    public EquatableArray<NameRef> Unquantized { get; init; }

    /// <summary>
    /// "key_renames": another tool's names for the checkpoint keys (llama.cpp's GGUF names for T5), as text replacements
    /// applied in order to every key of a file before it is matched with the weights.
    /// </summary>
    public EquatableArray<KeyRenameSpec> KeyRenames { get; init; }

    /// <summary>
    /// "float32_activations": the graph's forward keeps float32 activations even where the backend would store them
    /// narrower (bf16 precision on CUDA): set for a graph measured to lose too much in bf16.
    /// </summary>
    public bool Float32Activations { get; init; }
}

/// <summary>
/// The "lora" section: default rank and alpha (scale = alpha / rank), the preset a trainer uses unless told, and the
/// presets by name.
/// </summary>
public sealed record LoraSpec(string DefaultPreset, int Rank, double? Alpha, EquatableArray<LoraPresetSpec> Presets, SourceSpan Span);

/// <summary>
/// A named set of adapter targets: module patterns ("double_blocks.{i}.*"), how A is initialised, and, with
/// <paramref name="Split"/> naming a "lora_formats" entry, one adapter per row block of a fused layer as that format
/// splits it (block-diagonal on the fused weight) instead of one for the whole layer.
/// </summary>
public sealed record LoraPresetSpec(string Name, string? Description, string Init, string? Split, EquatableArray<LoraTargetSpec> Targets, SourceSpan Span);

/// <summary>A module pattern and, for a split layer, which of its row blocks get adapters (names as the format's split; empty: all).</summary>
public sealed record LoraTargetSpec(string Module, EquatableArray<string> Slices, SourceSpan Span);

/// <summary>
/// One linear layer under another tool's name, e.g. diffusers' "transformer_blocks.{i}.attn.to_q" for rows
/// [0, hidden_size) of "double_blocks.{i}.img_attn.qkv" (fused layers are split into row blocks).
/// <paramref name="AliasRowExpression"/> ("" = 0): where the block's rows start in the alias's own output, for a tool that
/// orders a layer's row blocks differently (one alias named on several blocks).
/// </summary>
public sealed record LoraAliasSpec(string Format, string Alias, string Module, int Part, string RowsExpression, SourceSpan Span, string AliasRowExpression = "");

/// <summary>
/// One method of the generated model over the shared weights: "forward" for a graph with a single body,
/// or each of "entries" (a VAE's "encode" and "decode").
/// </summary>
public sealed record EntrySpec(
    string Name,
    EquatableArray<TensorDeclarationSpec> Inputs,
    EquatableArray<StatementSpec> Body,
    EquatableArray<NameRef> Outputs,
    SourceSpan Span)
{
    /// <summary>
    /// Inputs whose gradients the entry's training pass hands back ("input_gradients"): a decoder's latent, so that an
    /// encoder's backward pass can continue from it.
    /// </summary>
    public EquatableArray<NameRef> InputGradients { get; init; }
}

/// <summary>A param's type; a string param (an activation's name) is compared in requirements ("hidden_act == 'quick_gelu'").</summary>
public enum ParamType { Int, Number, Bool, IntList, String }

public sealed record ParamDeclarationSpec(string Name, ParamType Type, SourceSpan Span);

public sealed record LetSpec(string Name, string Expression, SourceSpan Span);

public sealed record RequirementSpec(string That, string Message, SourceSpan Span);

/// <summary>A size known only at run time (batch, token counts), read off the inputs.</summary>
public sealed record SizeSpec(string Name, string Description, SourceSpan Span);

/// <summary>An input or weight: a name, a shape of expressions, and an optional condition.</summary>
public sealed record TensorDeclarationSpec(string Name, EquatableArray<AttributeValue> Shape, string? Condition, SourceSpan Span);

public sealed record NameRef(string Name, SourceSpan Span);

/// <summary>One "key_renames" entry: text <paramref name="From"/> in a file's keys reads as <paramref name="To"/>.</summary>
public sealed record KeyRenameSpec(string From, string To, SourceSpan Span);

public enum StatementKind { Op, Repeat, If }

/// <summary>
/// One line of a graph body: an op with named arguments and outputs, a repeated block (with its own
/// weights under a key prefix), or a conditional block.
/// </summary>
public sealed record StatementSpec(
    StatementKind Kind,
    string Op,
    EquatableArray<ArgumentSpec> Arguments,
    EquatableArray<NameRef> Outputs,
    string? Count,
    string? Index,
    string? Prefix,
    string? Condition,
    EquatableArray<TensorDeclarationSpec> Weights,
    EquatableArray<StatementSpec> Body,
    SourceSpan Span)
{
    /// <summary>Repeat: expand every iteration at compile time, so shapes and weights may depend on the index.</summary>
    public bool Unroll { get; init; }

    /// <summary>Repeat: count the index down (the decoder's levels 3, 2, 1, 0).</summary>
    public bool Reverse { get; init; }

    /// <summary>An instance of a graph template: one unrolled iteration whose prefix need not name an index.</summary>
    public bool IsTemplateUse { get; init; }

    /// <summary>Repeat (unrolled): constants evaluated per iteration, which may read the index.</summary>
    public EquatableArray<LetSpec> Lets { get; init; }
}

public sealed record ArgumentSpec(string Name, AttributeValue Value);

public enum AttributeKind { String, Number, Bool, List }

/// <summary>A JSON scalar or list of scalars, with its position.</summary>
public sealed record AttributeValue(AttributeKind Kind, string Text, EquatableArray<AttributeValue> Items, SourceSpan Span)
{
    public override string ToString() => Kind switch
    {
        AttributeKind.String => Text,
        AttributeKind.List => "[" + string.Join(", ", Items) + "]",
        _ => Text,
    };
}
