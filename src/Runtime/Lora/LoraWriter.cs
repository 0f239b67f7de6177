using System.Globalization;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Lora;

public enum LoraFormat
{
    /// <summary>kohya / ComfyUI: lora_unet_&lt;module with . → _&gt;.lora_down.weight, .lora_up.weight, .alpha.</summary>
    Kohya,

    /// <summary>diffusers / PEFT: &lt;diffusers module&gt;.lora_A.weight, .lora_B.weight, alpha/rank folded into lora_B.</summary>
    Diffusers,
}

/// <summary>What the exported file's <c>__metadata__</c> says about how it was trained.</summary>
public sealed record LoraExportInfo(string Method, int Rank, double Alpha, IReadOnlyList<string> Targets, string BaseModel, int Steps);

/// <summary>
/// Writes trained adapters (named as <see cref="TrainableParameter"/> names them) as a LoRA file other tools load.
/// Layer names come from the model's parameter table and its "diffusers" aliases, so any schema's model exports.
/// Weights trained in full (img_in) go in the same file under their checkpoint names.
/// </summary>
public static class LoraWriter
{
    public static LoraFormat ParseFormat(string name) => name switch
    {
        "kohya" or "comfyui" => LoraFormat.Kohya,
        "diffusers" or "peft" => LoraFormat.Diffusers,
        _ => throw new ArgumentException($"unknown LoRA format '{name}'; use kohya or diffusers"),
    };

    private sealed record Adapter(LoraTarget Target, HostTensor Down, HostTensor Up)
    {
        public int Rank => Down.Shape[0];
    }

    public static void Write(string path, IReadOnlyDictionary<string, HostTensor> trained, ModelDescriptor model, LoraFormat format, LoraExportInfo info)
    {
        var (adapters, fullWeights) = Collect(trained, model);
        var tensors = new List<KeyValuePair<string, HostTensor>>();
        if (format == LoraFormat.Kohya)
            foreach (var group in adapters.GroupBy(a => a.Target.Module.Module))
                AddKohya(tensors, group.Key, group.ToList(), info.Alpha);
        else
            foreach (var adapter in adapters)
                AddDiffusers(tensors, adapter, model, info.Alpha);
        tensors.AddRange(fullWeights);

        var duplicate = tensors.GroupBy(t => t.Key).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null)
            throw new ArgumentException($"two trained adapters would both be written as '{duplicate.Key}' in the {format} format (a whole-module and a split adapter on one layer?)");
        SafeTensorsWriter.Write(path, tensors, Metadata(format, info));
    }

    private static (List<Adapter> Adapters, List<KeyValuePair<string, HostTensor>> FullWeights) Collect(
        IReadOnlyDictionary<string, HostTensor> trained, ModelDescriptor model)
    {
        var halves = new Dictionary<LoraModule, (HostTensor? Down, HostTensor? Up)>();
        var fullWeights = new List<KeyValuePair<string, HostTensor>>();
        var parameters = model.Parameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var (name, tensor) in trained.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            if (LoraModule.TryParseHalf(name, out var module, out bool isDown))
            {
                var pair = halves.GetValueOrDefault(module);
                halves[module] = isDown ? (tensor, pair.Up) : (pair.Down, tensor);
                continue;
            }
            if (!parameters.TryGetValue(name, out var parameter))
                throw new ArgumentException($"'{name}' is neither a LoRA half (.lora_A/.lora_B) nor a weight of {model.Name}");
            if (!parameter.Shape.AsSpan().SequenceEqual(tensor.Shape))
                throw new ArgumentException($"trained '{name}' is {HostTensor.FormatShape(tensor.Shape)}, {model.Name} has {HostTensor.FormatShape(parameter.Shape)}");
            fullWeights.Add(new(name, tensor));
        }
        var adapters = new List<Adapter>();
        foreach (var (module, (down, up)) in halves.OrderBy(h => h.Key.Name, StringComparer.Ordinal))
        {
            if (down is null || up is null)
                throw new ArgumentException($"adapter '{module.Name}' has only its {(down is null ? "lora_B" : "lora_A")} half");
            var target = LoraTargets.Resolve(module, model);
            if (down.Rank != 2 || up.Rank != 2 || down.Shape[1] != target.In || up.Shape[0] != target.Rows || up.Shape[1] != down.Shape[0])
                throw new ArgumentException(
                    $"adapter '{module.Name}': A {HostTensor.FormatShape(down.Shape)} and B {HostTensor.FormatShape(up.Shape)} do not fit " +
                    $"rows {target.RowOffset}..{target.RowOffset + target.Rows} of [{target.ModuleRows}, {target.In}]");
            adapters.Add(new Adapter(target, down, up));
        }
        return (adapters, fullWeights);
    }

    /// <summary>
    /// kohya has one adapter per layer. Several adapters on one layer (diffusers' split q/k/v) are merged exactly as
    /// diffusers converts the other way: A's stacked to [Σr, in], B's placed block-diagonally in [rows, Σr] at their row
    /// blocks, alpha raised so alpha'/Σr is the trained alpha/r.
    /// </summary>
    private static void AddKohya(List<KeyValuePair<string, HostTensor>> tensors, string module, List<Adapter> adapters, double alpha)
    {
        string key = "lora_unet_" + module.Replace('.', '_');
        HostTensor down, up;
        double fileAlpha;
        if (adapters.Count == 1 && adapters[0].Target.Rows == adapters[0].Target.ModuleRows)
        {
            (down, up, fileAlpha) = (adapters[0].Down, adapters[0].Up, alpha);
        }
        else
        {
            int totalRank = adapters.Sum(a => a.Rank), columns = adapters[0].Target.In, rows = adapters[0].Target.ModuleRows;
            int firstRank = adapters[0].Rank;
            fileAlpha = alpha * totalRank / firstRank;
            down = new HostTensor(totalRank, columns);
            up = new HostTensor(rows, totalRank);
            int rankOffset = 0;
            foreach (var adapter in adapters)
            {
                // Equal ranks give 1; unequal ones keep each block's own alpha/r under the file's single alpha.
                float blockScale = (float)firstRank / adapter.Rank;
                Array.Copy(adapter.Down.Data, 0, down.Data, rankOffset * columns, adapter.Down.Data.Length);
                for (int r = 0; r < adapter.Target.Rows; r++)
                    for (int k = 0; k < adapter.Rank; k++)
                        up.Data[(adapter.Target.RowOffset + r) * totalRank + rankOffset + k] = adapter.Up.Data[r * adapter.Rank + k] * blockScale;
                rankOffset += adapter.Rank;
            }
        }
        tensors.Add(new(key + ".lora_down.weight", down));
        tensors.Add(new(key + ".lora_up.weight", up));
        tensors.Add(new(key + ".alpha", new HostTensor([], [(float)fileAlpha])));
    }

    /// <summary>
    /// PEFT keeps alpha outside the weights, so alpha/rank is folded into lora_B and readers that assume alpha = rank
    /// get the trained delta. A whole-module adapter on a layer diffusers splits is written once per part: A copied, B's rows split.
    /// </summary>
    private static void AddDiffusers(List<KeyValuePair<string, HostTensor>> tensors, Adapter adapter, ModelDescriptor model, double alpha)
    {
        var module = adapter.Target.Module;
        if (!LoraTargets.DiffusersParts(model).TryGetValue(module.Module, out var parts))
            throw new ArgumentException($"{module.Module} has no diffusers name in the schema of {model.Name}; it cannot be written in the diffusers format");
        float scale = (float)(alpha / adapter.Rank);
        foreach (var (alias, rowOffset, rows) in parts)
        {
            int start = rowOffset - adapter.Target.RowOffset;
            if (start < 0 || start + rows > adapter.Target.Rows) continue;
            var up = new HostTensor(rows, adapter.Rank);
            for (int i = 0; i < up.Data.Length; i++) up.Data[i] = adapter.Up.Data[start * adapter.Rank + i] * scale;
            tensors.Add(new(alias + ".lora_A.weight", adapter.Down));
            tensors.Add(new(alias + ".lora_B.weight", up));
        }
    }

    private static Dictionary<string, string> Metadata(LoraFormat format, LoraExportInfo info)
    {
        var c = CultureInfo.InvariantCulture;
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = format == LoraFormat.Kohya ? "kohya" : "diffusers",
            ["software"] = "InFluxEdit",
            ["method"] = info.Method,
            ["rank"] = info.Rank.ToString(c),
            ["alpha"] = info.Alpha.ToString("R", c),
            ["targets"] = string.Join(",", info.Targets),
            ["base_model"] = info.BaseModel,
            ["steps"] = info.Steps.ToString(c),
        };
        if (format == LoraFormat.Kohya)
        {
            // sd-scripts' own keys, which kohya-based tools display.
            metadata["ss_network_dim"] = info.Rank.ToString(c);
            metadata["ss_network_alpha"] = info.Alpha.ToString("R", c);
        }
        else
        {
            metadata["alpha_folded_into_lora_B"] = "true";
        }
        return metadata;
    }
}
