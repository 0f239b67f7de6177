namespace InFluxEdit.Runtime.Models;

/// <summary>
/// What a compiled model says about itself, so a checkpoint can be matched to it.
/// <paramref name="Params"/> maps each schema parameter to the JSON text of its value ("3072", "4.0",
/// "[16, 56, 56]", "true"), named as the reference implementation's config names it.
/// </summary>
/// <param name="Name">The model's name, e.g. the schema file name without extension.</param>
/// <param name="SchemaFile">The schema file the model was generated from, for messages.</param>
/// <param name="Family">The architecture family the schema belongs to.</param>
/// <param name="Params">Parameter name → JSON text of its value.</param>
/// <param name="Parameters">The weights the model loads.</param>
public sealed record ModelDescriptor(
    string Name,
    string SchemaFile,
    string Family,
    IReadOnlyDictionary<string, string> Params,
    IReadOnlyList<ParameterInfo> Parameters)
{
    /// <summary>Other tools' names for the model's linear layers (from the schema's "lora_formats").</summary>
    public IReadOnlyList<LoraAlias> LoraAliases { get; init; } = Array.Empty<LoraAlias>();

    /// <summary>The schema's "lora" section: default rank, alpha and preset, and what each preset trains; null without one.</summary>
    public LoraDefaults? Lora { get; init; }

    /// <summary>
    /// Patterns of checkpoint tensors the model does not use but published files carry (the schema's
    /// "ignored_tensors"; "*" matches any text): loading and recognition pass over them.
    /// </summary>
    public IReadOnlyList<string> IgnoredTensors { get; init; } = Array.Empty<string>();

    /// <summary>
    /// The linear layers (module keys, "double_blocks.0.img_attn.qkv") whose every pass applies the adapters of
    /// <see cref="CompiledModel.Training"/>: the schema's trainable linear layers. An adapter elsewhere would never act.
    /// </summary>
    public IReadOnlyList<string> AdapterModules { get; init; } = Array.Empty<string>();

    /// <summary>
    /// Another tool's names for the checkpoint keys (the schema's "key_renames": llama.cpp's GGUF names for T5), as text
    /// replacements applied in order to every key of a file: <see cref="CanonicalKey"/>.
    /// </summary>
    public IReadOnlyList<KeyRename> KeyRenames { get; init; } = Array.Empty<KeyRename>();

    /// <summary>
    /// Whether the forward keeps float32 activations where the backend would store them narrower (the graph's
    /// "float32_activations"): a graph measured to lose too much precision in bf16.
    /// </summary>
    public bool Float32Activations { get; init; }

    /// <summary>Whether a checkpoint key is one of <see cref="IgnoredTensors"/>.</summary>
    public bool Ignores(string key) => IgnoredTensors.Any(pattern => KeyPattern.Matches(pattern, key));

    /// <summary>A file's key under the schema's names: <see cref="KeyRenames"/> applied in order (the schema's own keys contain none).</summary>
    public string CanonicalKey(string key)
    {
        foreach (var rename in KeyRenames) key = key.Replace(rename.From, rename.To, StringComparison.Ordinal);
        return key;
    }
}

/// <summary>Text <paramref name="From"/> in another tool's checkpoint keys stands for <paramref name="To"/> in the schema's.</summary>
public sealed record KeyRename(string From, string To);

/// <summary>Checkpoint key patterns: "*" matches any run of characters (dots included), everything else itself.</summary>
public static class KeyPattern
{
    public static bool Matches(string pattern, string key) => Matches(pattern.AsSpan(), key.AsSpan());

    private static bool Matches(ReadOnlySpan<char> pattern, ReadOnlySpan<char> key)
    {
        int star = pattern.IndexOf('*');
        if (star < 0) return pattern.SequenceEqual(key);
        if (key.Length < star || !pattern[..star].SequenceEqual(key[..star])) return false;
        var rest = pattern[(star + 1)..];
        for (int skip = star; skip <= key.Length; skip++)
            if (Matches(rest, key[skip..])) return true;
        return false;
    }
}

/// <summary>A model's LoRA defaults (scale = alpha / rank) and presets by name.</summary>
public sealed record LoraDefaults(string DefaultPreset, int Rank, double Alpha, IReadOnlyList<LoraPreset> Presets);

/// <summary>
/// A named set of adapter targets. <paramref name="Init"/> is how A starts ("gaussian", "kaiming_uniform"; B starts at
/// zero). With <paramref name="Split"/> (a LoRA format of <see cref="ModelDescriptor.LoraAliases"/>) a layer that format
/// splits into row blocks gets one adapter per block; otherwise one adapter per layer.
/// </summary>
public sealed record LoraPreset(string Name, string Description, string Init, string? Split, IReadOnlyList<LoraPresetTarget> Targets);

/// <summary>A linear layer's module key ("{i}" for any block index) and, for a split layer, which row blocks (null: all).</summary>
public sealed record LoraPresetTarget(string Module, IReadOnlyList<int>? Parts = null);

/// <summary>
/// Rows [RowOffset, RowOffset + RowCount) of the linear layer <paramref name="Module"/> (its weight is
/// "Module.weight"), named <paramref name="Alias"/> by <paramref name="Format"/>; "{i}" stands for a block index.
/// They are rows [AliasRowOffset, AliasRowOffset + RowCount) of the alias's own output: a tool that orders a layer's
/// row blocks differently names one alias on several blocks.
/// </summary>
public sealed record LoraAlias(string Format, string Alias, string Module, int RowOffset, int RowCount, int AliasRowOffset = 0);

/// <summary>The model a checkpoint was recognised as, and why (for the user and the log).</summary>
public sealed record ModelMatch(ModelDescriptor Model, string Reason);

/// <summary>
/// No candidate model fits a checkpoint, or several fit equally. An <see cref="IOException"/> because
/// <see cref="InvalidDataException"/> is sealed.
/// </summary>
public sealed class ModelNotRecognizedException(string message) : IOException(message);
