using System.Globalization;
using System.Text.RegularExpressions;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Lora;

/// <summary>A LoRA file that does not fit the model: unknown modules, wrong shapes, missing halves.</summary>
public sealed class LoraMismatchException(string message) : IOException(message);

/// <summary>
/// Reads a LoRA file in any of the layouts in circulation and turns it into weight deltas ΔW = s·B·A for the
/// model's fused layers, s = alpha/rank × the user's scale:
/// kohya / ComfyUI ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", ".lora_up.weight", ".alpha";
/// also "diffusion_model." + key), the checkpoint's own names ("double_blocks.0.img_attn.qkv.lora_A.weight"), and
/// every alias the schema declares (diffusers/PEFT "transformer.transformer_blocks.0.attn.to_q.lora_A.weight"),
/// where a split layer (q, k, v of a fused qkv) fills its own rows of the fused delta.
/// </summary>
public static class LoraReader
{
    private static readonly (string Down, string Up)[] HalfNames =
    {
        (".lora_down.weight", ".lora_up.weight"),
        (".lora_A.weight", ".lora_B.weight"),
    };

    /// <summary>Where an adapter's output rows land: a linear layer and a row block of its weight.</summary>
    private sealed record Target(string Module, int RowOffset, int RowCount, int Out, int In);

    public static Dictionary<string, HostTensor> ReadDeltas(string path, ModelDescriptor model, float userScale = 1f) =>
        Read(path, model, userScale).Deltas;

    /// <summary>
    /// A LoRA file's weight deltas, and the weights it carries whole (a trained img_in, under the checkpoint's key or
    /// an alias such as diffusers' "x_embedder.weight", as in the seed's flux_x_embedder.safetensors): those replace
    /// the checkpoint's, whatever the scale.
    /// </summary>
    public static (Dictionary<string, HostTensor> Deltas, Dictionary<string, HostTensor> Replacements) Read(string path, ModelDescriptor model, float userScale = 1f)
    {
        using var file = SafeTensorsFile.Open(path);
        var targets = TargetsOf(model);
        var adapters = GroupAdapters(file, out var leftovers);
        var problems = new List<string>();
        var replacements = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        var wholeNames = WholeWeightNames(model);
        foreach (string name in leftovers)
        {
            if (wholeNames.TryGetValue(name, out var parameter))
            {
                var value = file.ReadFloat32(name);
                if (value.Shape.AsSpan().SequenceEqual(parameter.Shape)) replacements[parameter.Name] = value;
                else problems.Add($"'{name}' is {HostTensor.FormatShape(value.Shape)}; {parameter.Name} is {HostTensor.FormatShape(parameter.Shape)}");
            }
            else problems.Add($"'{name}' is not part of a LoRA pair (lora_down/lora_up or lora_A/lora_B) nor a weight of {model.Name}");
        }

        var deltas = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        int matched = 0;
        foreach (var (name, parts) in adapters)
        {
            if (!targets.TryGetValue(name, out var target))
            {
                problems.Add($"'{name}' names no layer of {model.Name}");
                continue;
            }
            if (parts.Down == null || parts.Up == null)
            {
                problems.Add($"'{name}' has only its {(parts.Down == null ? "up/B" : "down/A")} half");
                continue;
            }
            var down = file.ReadFloat32(parts.Down);
            var up = file.ReadFloat32(parts.Up);
            if (down.Rank != 2 || up.Rank != 2 || down.Shape[1] != target.In || up.Shape[0] != target.RowCount || up.Shape[1] != down.Shape[0])
            {
                problems.Add($"'{name}': down {HostTensor.FormatShape(down.Shape)} and up {HostTensor.FormatShape(up.Shape)} do not fit " +
                             $"{target.Module} (rows {target.RowOffset}..{target.RowOffset + target.RowCount} of [{target.Out}, {target.In}])");
                continue;
            }
            int rank = down.Shape[0];
            var alphaValues = parts.Alpha != null ? file.ReadFloat32(parts.Alpha).Data : null;
            if (alphaValues is { Length: not 1 })
            {
                problems.Add($"'{parts.Alpha}' holds {alphaValues.Length} values; an alpha is one number");
                continue;
            }
            float alpha = alphaValues?[0] ?? AlphaFromMetadata(file) ?? rank;
            float scale = alpha / rank * userScale;
            if (!deltas.TryGetValue(target.Module + ".weight", out var delta))
                deltas[target.Module + ".weight"] = delta = new HostTensor(target.Out, target.In);
            AddProduct(delta, target.RowOffset, up, down, scale);
            matched++;
        }
        if (problems.Count > 0)
        {
            string what = matched == 0 && replacements.Count == 0
                ? $"{path} is not a LoRA for {model.Name} (schemas/{model.SchemaFile}): none of its {adapters.Count} adapters fits"
                : $"{path} does not fit {model.Name} (schemas/{model.SchemaFile}) everywhere";
            throw new LoraMismatchException(what + ":\n  " + string.Join("\n  ", problems.Take(20)) +
                                            (problems.Count > 20 ? $"\n  … and {problems.Count - 20} more" : ""));
        }
        if (matched == 0 && replacements.Count == 0)
            throw new LoraMismatchException($"{path} holds no LoRA adapters (no lora_down/lora_up or lora_A/lora_B pairs) and no weights of {model.Name}");
        return (deltas, replacements);
    }

    /// <summary>Names a whole weight may have in a LoRA file: its checkpoint key, and ".weight"/".bias" of its aliases.</summary>
    private static Dictionary<string, ParameterInfo> WholeWeightNames(ModelDescriptor model)
    {
        var names = new Dictionary<string, ParameterInfo>(StringComparer.Ordinal);
        foreach (var parameter in model.Parameters) names[parameter.Name] = parameter;
        foreach (var alias in model.LoraAliases.Where(a => a.RowOffset == 0 && !a.Module.Contains("{i}")))
            foreach (string suffix in new[] { ".weight", ".bias" })
            {
                var parameter = model.Parameters.FirstOrDefault(p => p.Name == alias.Module + suffix);
                if (parameter == null || parameter.Shape[0] != alias.RowCount) continue;
                names[alias.Alias + suffix] = parameter;
                int dot = alias.Alias.IndexOf('.');
                if (dot > 0) names[alias.Alias[(dot + 1)..] + suffix] = parameter;
            }
        return names;
    }

    /// <summary>Every name an adapter of the model may have, in every layout, mapped to where it writes.</summary>
    private static Dictionary<string, Target> TargetsOf(ModelDescriptor model)
    {
        var targets = new Dictionary<string, Target>(StringComparer.Ordinal);
        var linears = model.Parameters
            .Where(p => p.Shape.Length == 2 && p.Name.EndsWith(".weight", StringComparison.Ordinal))
            .ToDictionary(p => p.Name[..^".weight".Length], p => p, StringComparer.Ordinal);
        foreach (var (module, parameter) in linears)
        {
            var whole = new Target(module, 0, parameter.Shape[0], parameter.Shape[0], parameter.Shape[1]);
            targets[module] = whole;
            targets["diffusion_model." + module] = whole;
            targets["lora_unet_" + module.Replace('.', '_')] = whole;
        }
        foreach (var alias in model.LoraAliases)
        {
            // "{i}" in the module pattern matches a block index, which the alias name then carries.
            var pattern = new Regex("^" + Regex.Escape(alias.Module).Replace(Regex.Escape("{i}"), "(?<i>[0-9]+)") + "$");
            foreach (var (module, parameter) in linears)
            {
                var match = pattern.Match(module);
                if (!match.Success) continue;
                string name = alias.Alias.Replace("{i}", match.Groups["i"].Value);
                targets[name] = new Target(module, alias.RowOffset, alias.RowCount, parameter.Shape[0], parameter.Shape[1]);
            }
        }
        return targets;
    }

    private sealed class AdapterParts
    {
        public string? Down, Up, Alpha;
    }

    private static Dictionary<string, AdapterParts> GroupAdapters(SafeTensorsFile file, out List<string> leftovers)
    {
        var adapters = new Dictionary<string, AdapterParts>(StringComparer.Ordinal);
        leftovers = new List<string>();
        AdapterParts Parts(string name) => adapters.TryGetValue(name, out var p) ? p : adapters[name] = new AdapterParts();
        foreach (var tensor in file.Tensors)
        {
            string key = tensor.Name;
            var half = HalfNames.Select(h => key.EndsWith(h.Down, StringComparison.Ordinal) ? (Name: key[..^h.Down.Length], Down: true)
                    : key.EndsWith(h.Up, StringComparison.Ordinal) ? (Name: key[..^h.Up.Length], Down: false) : (Name: (string?)null, Down: false))
                .FirstOrDefault(h => h.Name != null);
            if (half.Name != null)
            {
                if (half.Down) Parts(half.Name).Down = key;
                else Parts(half.Name).Up = key;
            }
            else if (key.EndsWith(".alpha", StringComparison.Ordinal)) Parts(key[..^".alpha".Length]).Alpha = key;
            else leftovers.Add(key);
        }
        return adapters;
    }

    /// <summary>PEFT files carry no alpha tensors; ours and some trainers put it in the metadata.</summary>
    private static float? AlphaFromMetadata(SafeTensorsFile file) =>
        file.Metadata.TryGetValue("lora_alpha", out var text) &&
        float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float alpha) ? alpha : null;

    /// <summary>delta[rowOffset.., :] += scale · up · down, on the fast CPU GEMM (up to 12288 × 3072 × rank per layer).</summary>
    private static unsafe void AddProduct(HostTensor delta, int rowOffset, HostTensor up, HostTensor down, float scale)
    {
        int rows = up.Shape[0], rank = up.Shape[1], columns = down.Shape[1];
        var scaledUp = up.Data.Select(v => v * scale).ToArray();
        var downTransposed = new float[columns * rank];
        for (int r = 0; r < rank; r++)
            for (int c = 0; c < columns; c++)
                downTransposed[c * rank + r] = down.Data[r * columns + c];
        var product = new float[rows * columns];
        fixed (float* a = scaledUp, b = downTransposed, c = product)
            CpuGemm.Multiply(rows, columns, rank, a, rank, b, rank, c, columns);
        var target = delta.Data.AsSpan(rowOffset * columns, rows * columns);
        for (int i = 0; i < product.Length; i++) target[i] += product[i];
    }
}
