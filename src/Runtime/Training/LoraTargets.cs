using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// One adapter to train: rows [RowOffset, RowOffset + Rows) of the linear layer <see cref="LoraModule.Module"/>
/// whose weight is [ModuleRows, In]. A whole-module adapter has RowOffset 0 and Rows = ModuleRows.
/// </summary>
public sealed record LoraTarget(LoraModule Module, int RowOffset, int Rows, int ModuleRows, int In)
{
    public string Name => Module.Name;
}

/// <summary>
/// Which linear layers get adapters: a preset of the model's schema ("lora" → "presets", in
/// <see cref="ModelDescriptor.Lora"/>) applied to its parameter table, so the runtime knows no layer names and a model
/// of other sizes (or another architecture) added as a schema brings its own presets.
/// </summary>
public static class LoraTargets
{
    public const string DiffusersFormat = "diffusers";

    /// <summary>The model's presets by name, from its schema; an error naming the schema when it has none.</summary>
    public static LoraPreset FindPreset(string name, ModelDescriptor model)
    {
        var lora = model.Lora ?? throw new ArgumentException($"{model.Name} has no LoRA presets: its schema (schemas/{model.SchemaFile}'s graph) has no \"lora\" section");
        return lora.Presets.FirstOrDefault(p => p.Name == name)
            ?? throw new ArgumentException($"unknown LoRA target preset '{name}'; {model.Name} has: {string.Join(", ", lora.Presets.Select(p => p.Name))}", nameof(name));
    }

    /// <summary>
    /// The adapters of a preset in parameter-table order (the order their A matrices are drawn in): for each linear layer
    /// the first target naming it, one whole-layer adapter, or with the preset's split one per (chosen) row block of a
    /// layer that format splits. A layer with a single alias covering all its rows stays whole.
    /// </summary>
    public static IReadOnlyList<LoraTarget> Preset(string name, ModelDescriptor model)
    {
        var preset = FindPreset(name, model);
        var parts = preset.Split is { } format ? Parts(model, format) : null;
        var targets = new List<LoraTarget>();
        foreach (var linear in Linears(model))
        {
            var target = preset.Targets.FirstOrDefault(t => TryMatchPattern(t.Module, linear.Module, out _));
            if (target is null) continue;
            if (parts is null || !parts.TryGetValue(linear.Module, out var blocks))
            {
                targets.Add(new LoraTarget(new LoraModule(linear.Module, null), 0, linear.Rows, linear.Rows, linear.In));
                continue;
            }
            bool split = blocks.Count > 1;
            for (int part = 0; part < blocks.Count; part++)
            {
                if (target.Parts is { } chosen && !chosen.Contains(part)) continue;
                var (_, rowOffset, rows) = blocks[part];
                targets.Add(new LoraTarget(new LoraModule(linear.Module, split ? part : null), rowOffset, rows, linear.Rows, linear.In));
            }
        }
        return targets;
    }

    /// <summary>Resolves adapter names ("double_blocks.0.img_attn.qkv", "…qkv:1") against the model, for checkpoints and resume.</summary>
    public static LoraTarget Resolve(LoraModule module, ModelDescriptor model)
    {
        var linear = Linears(model).FirstOrDefault(l => l.Module == module.Module);
        if (linear.Module is null)
            throw new ArgumentException($"'{module.Module}' is not a linear layer of {model.Name} (no 2-D '{module.Module}.weight')");
        if (module.Part is not { } part) return new LoraTarget(module, 0, linear.Rows, linear.Rows, linear.In);
        if (!DiffusersParts(model).TryGetValue(module.Module, out var aliases) || part >= aliases.Count)
            throw new ArgumentException($"'{module.Name}': {module.Module} has no row block {part} in the {DiffusersFormat} aliases of {model.Name}");
        return new LoraTarget(module, aliases[part].RowOffset, aliases[part].Rows, linear.Rows, linear.In);
    }

    /// <summary>The model's 2-D ".weight" parameters as (module, rows, in), in parameter-table order.</summary>
    internal static IEnumerable<(string Module, int Rows, int In)> Linears(ModelDescriptor model) =>
        model.Parameters
            .Where(p => p.Shape.Length == 2 && p.Name.EndsWith(".weight", StringComparison.Ordinal))
            .Select(p => (p.Name[..^".weight".Length], p.Shape[0], p.Shape[1]));

    /// <summary>
    /// Module → its "diffusers" aliases with block indices filled in, ordered by row offset (the part index).
    /// "{i}" in an alias pattern stands for the block index of the module it names.
    /// </summary>
    internal static Dictionary<string, List<(string Alias, int RowOffset, int Rows)>> DiffusersParts(ModelDescriptor model) =>
        Parts(model, DiffusersFormat);

    /// <summary>Module → its aliases in <paramref name="format"/>, block indices filled in, ordered by row offset.</summary>
    internal static Dictionary<string, List<(string Alias, int RowOffset, int Rows)>> Parts(ModelDescriptor model, string format)
    {
        var byModule = new Dictionary<string, List<(string Alias, int RowOffset, int Rows)>>(StringComparer.Ordinal);
        foreach (var (name, piece) in Aliases(model, format))
        {
            if (!byModule.TryGetValue(piece.Module, out var list)) byModule[piece.Module] = list = [];
            list.Add((name, piece.RowOffset, piece.Rows));
        }
        foreach (var list in byModule.Values) list.Sort((a, b) => a.RowOffset.CompareTo(b.RowOffset));
        return byModule;
    }

    /// <summary>Every alias of <paramref name="format"/> with block indices filled in, and the row block it names.</summary>
    internal static IEnumerable<(string Alias, Lora.LoraPiece Piece)> Aliases(ModelDescriptor model, string format)
    {
        var modules = Linears(model).Select(l => l.Module).ToList();
        foreach (var alias in model.LoraAliases.Where(a => a.Format == format))
            foreach (string module in modules)
            {
                if (!TryMatchPattern(alias.Module, module, out string? index)) continue;
                string name = index is null ? alias.Alias : alias.Alias.Replace("{i}", index);
                yield return (name, new Lora.LoraPiece(module, alias.RowOffset, alias.RowCount, alias.AliasRowOffset));
            }
    }

    private static bool TryMatchPattern(string pattern, string module, out string? index)
    {
        index = null;
        int hole = pattern.IndexOf("{i}", StringComparison.Ordinal);
        if (hole < 0) return pattern == module;
        string prefix = pattern[..hole], suffix = pattern[(hole + 3)..];
        if (module.Length <= prefix.Length + suffix.Length || !module.StartsWith(prefix, StringComparison.Ordinal) || !module.EndsWith(suffix, StringComparison.Ordinal))
            return false;
        string digits = module[prefix.Length..^suffix.Length];
        if (!digits.All(char.IsAsciiDigit)) return false;
        index = digits;
        return true;
    }
}
