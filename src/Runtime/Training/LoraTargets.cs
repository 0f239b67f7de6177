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
/// Which linear layers get adapters, derived from a model's parameter table and its "diffusers" LoRA aliases, so a
/// model of other sizes added as a schema gets the same presets without code changes.
/// </summary>
public static class LoraTargets
{
    public const string DiffusersFormat = "diffusers";

    /// <summary>
    /// The modules diffusers' train_dreambooth_lora_flux.py targets, matched as PEFT matches target_modules: an alias
    /// equal to one of them or ending in "." + one of them. That is how its "attn.to_q" also hits the single blocks'
    /// q/k/v (rows of linear1) but not their proj_mlp.
    /// </summary>
    public static readonly IReadOnlyList<string> DiffusersTrainScriptModules =
    [
        "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
        "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    ];

    public static readonly IReadOnlyList<string> PresetNames = ["kohya", "diffusers"];

    public static IReadOnlyList<LoraTarget> Preset(string name, ModelDescriptor model) => name switch
    {
        "kohya" => Kohya(model),
        "diffusers" => Diffusers(model),
        _ => throw new ArgumentException($"unknown LoRA target preset '{name}'; use one of: {string.Join(", ", PresetNames)}", nameof(name)),
    };

    /// <summary>
    /// sd-scripts' lora_flux.py default: every linear layer inside the double and single blocks, modulation
    /// included, one whole-module adapter each (fused qkv and linear1 are not split).
    /// </summary>
    public static IReadOnlyList<LoraTarget> Kohya(ModelDescriptor model) =>
        Linears(model)
            .Where(l => l.Module.StartsWith("double_blocks.", StringComparison.Ordinal) || l.Module.StartsWith("single_blocks.", StringComparison.Ordinal))
            .Select(l => new LoraTarget(new LoraModule(l.Module, null), 0, l.Rows, l.Rows, l.In))
            .ToList();

    /// <summary>
    /// The diffusers training script's set, in the diffusers layout: one adapter per matching alias. A layer whose
    /// aliases split it into row blocks gets a part adapter per matching block; a layer with a single alias covering
    /// all its rows gets a whole-module adapter.
    /// </summary>
    public static IReadOnlyList<LoraTarget> Diffusers(ModelDescriptor model)
    {
        var parts = DiffusersParts(model);
        var targets = new List<LoraTarget>();
        foreach (var linear in Linears(model))
        {
            if (!parts.TryGetValue(linear.Module, out var aliases)) continue;
            bool split = aliases.Count > 1;
            for (int part = 0; part < aliases.Count; part++)
            {
                var (alias, rowOffset, rows) = aliases[part];
                if (!DiffusersTrainScriptModules.Any(m => alias == m || alias.EndsWith("." + m, StringComparison.Ordinal))) continue;
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
    internal static Dictionary<string, List<(string Alias, int RowOffset, int Rows)>> DiffusersParts(ModelDescriptor model)
    {
        var byModule = new Dictionary<string, List<(string Alias, int RowOffset, int Rows)>>(StringComparer.Ordinal);
        var modules = Linears(model).Select(l => l.Module).ToList();
        foreach (var alias in model.LoraAliases.Where(a => a.Format == DiffusersFormat))
        {
            foreach (string module in modules)
            {
                if (!TryMatchPattern(alias.Module, module, out string? index)) continue;
                string name = index is null ? alias.Alias : alias.Alias.Replace("{i}", index);
                if (!byModule.TryGetValue(module, out var list)) byModule[module] = list = [];
                list.Add((name, alias.RowOffset, alias.RowCount));
            }
        }
        foreach (var list in byModule.Values) list.Sort((a, b) => a.RowOffset.CompareTo(b.RowOffset));
        return byModule;
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
