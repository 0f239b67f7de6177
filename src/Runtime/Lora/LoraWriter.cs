using System.Globalization;
using System.Text.Json;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Lora;

public enum LoraFormat
{
    /// <summary>kohya / ComfyUI: lora_unet_&lt;module with . → _&gt;.lora_down.weight, .lora_up.weight, .alpha; full-weight changes as .diff / .diff_b.</summary>
    Kohya,

    /// <summary>diffusers / PEFT: &lt;diffusers module&gt;.lora_A.weight, .lora_B.weight (.lora_B.bias), alpha/rank folded into lora_B.</summary>
    Diffusers,
}

/// <summary>What the exported file's <c>__metadata__</c> says about how it was trained.</summary>
public sealed record LoraExportInfo(string Method, int Rank, double Alpha, IReadOnlyList<string> Targets, string BaseModel, int Steps);

/// <summary>
/// Writes LoRA content as a file other tools load. Layer names come from the model's parameter table and its
/// "diffusers" aliases, so any schema's model exports. Changes that are not low-rank (a trained img_in, LoKr, DoRA …)
/// are written as ComfyUI's full-weight patches in the kohya layout (.diff, .diff_b) and as exact full-rank pairs
/// with lora_B.bias in the diffusers layout (the form of BFL's Control LoRAs), so both peers apply them.
/// </summary>
public static class LoraWriter
{
    public static LoraFormat ParseFormat(string name) => name switch
    {
        "kohya" or "comfyui" => LoraFormat.Kohya,
        "diffusers" or "peft" => LoraFormat.Diffusers,
        _ => throw new ArgumentException($"unknown LoRA format '{name}'; use kohya or diffusers"),
    };

    public static DType ParseDType(string name) => name.ToLowerInvariant() switch
    {
        "bf16" => DType.BF16,
        "f16" or "fp16" => DType.F16,
        "f32" or "fp32" => DType.F32,
        _ => throw new ArgumentException($"unknown export dtype '{name}'; use bf16 (the peers' default), f16 or f32"),
    };

    /// <summary>
    /// Writes trained adapters (named as <see cref="TrainableParameter"/> names them: "module[:part].lora_A/lora_B", at
    /// scale alpha/rank) and weights trained whole (img_in), written as their change from <paramref name="baseWeights"/>.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, HostTensor> trained, ModelDescriptor model, LoraFormat format, LoraExportInfo info,
        Func<string, HostTensor>? baseWeights = null, DType dtype = DType.BF16) =>
        Write(path, FromTrained(trained, model, info.Alpha, baseWeights), model, format, Metadata(format, info), dtype);

    /// <summary>Writes <paramref name="content"/> in <paramref name="format"/>, tensors stored as <paramref name="dtype"/> (alphas in float32).</summary>
    public static void Write(string path, LoraContent content, ModelDescriptor model, LoraFormat format, IReadOnlyDictionary<string, string> metadata, DType dtype)
    {
        var tensors = new List<(string Name, HostTensor Value, DType DType)>();
        var fileMetadata = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
        if (format == LoraFormat.Kohya) AddKohya(tensors, content, model, dtype);
        else AddDiffusers(tensors, fileMetadata, content, model, dtype);
        var duplicate = tensors.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null)
            throw new ArgumentException($"two changes would both be written as '{duplicate.Key}' in the {format} format");
        SafeTensorsWriter.WriteRaw(path, tensors.Select(t => new RawTensor(t.Name, t.DType, t.Value.Shape, DTypeEncoding.Encode(t.Value.Data, t.DType))), fileMetadata);
    }

    /// <summary>Trained tensors as content: adapters at alpha/rank, whole weights as their change from the base.</summary>
    public static LoraContent FromTrained(IReadOnlyDictionary<string, HostTensor> trained, ModelDescriptor model, double alpha, Func<string, HostTensor>? baseWeights)
    {
        var content = new LoraContent();
        var halves = new Dictionary<LoraModule, (HostTensor? Down, HostTensor? Up)>();
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
            var baseWeight = (baseWeights ?? throw new ArgumentException(
                $"'{name}' was trained whole: exporting it as a change needs the base checkpoint's weights"))(name);
            content.Dense.Add(new DenseDelta(name, 0, new HostTensor((int[])tensor.Shape.Clone(), tensor.Data.Zip(baseWeight.Data, (t, b) => t - b).ToArray())));
        }
        foreach (var (module, (down, up)) in halves.OrderBy(h => h.Key.Name, StringComparer.Ordinal))
        {
            if (down is null || up is null)
                throw new ArgumentException($"adapter '{module.Name}' has only its {(down is null ? "lora_B" : "lora_A")} half");
            var target = LoraTargets.Resolve(module, model);
            if (down.Rank != 2 || up.Rank != 2 || down.Shape[1] != target.In || up.Shape[0] != target.Rows || up.Shape[1] != down.Shape[0])
                throw new ArgumentException(
                    $"adapter '{module.Name}': A {HostTensor.FormatShape(down.Shape)} and B {HostTensor.FormatShape(up.Shape)} do not fit " +
                    $"rows {target.RowOffset}..{target.RowOffset + target.Rows} of [{target.ModuleRows}, {target.In}]");
            content.LowRank.Add(new LowRankDelta(module.Module, target.RowOffset, down, up, (float)(alpha / down.Shape[0])));
        }
        return content;
    }

    /// <summary>
    /// kohya has one adapter per layer. Several adapters on one layer are stacked as diffusers converts the other way
    /// (A's stacked, B's block-diagonal), and a layer diffusers splits gets every block of its split at one rank, zero
    /// where nothing was trained (linear1's proj_mlp): a uniform block-diagonal layout that every reader, old diffusers
    /// included, splits back exactly. A layer with a full-weight change is written whole as ComfyUI's .diff.
    /// </summary>
    private static void AddKohya(List<(string, HostTensor, DType)> tensors, LoraContent content, ModelDescriptor model, DType dtype)
    {
        var shapes = model.Parameters.ToDictionary(p => p.Name, p => p.Shape, StringComparer.Ordinal);
        var modules = content.LowRank.Select(l => l.Module).Concat(content.Dense.Select(d => ModuleOf(d.Parameter))).Distinct().Order(StringComparer.Ordinal);
        var deltas = content.ToDeltas(model);
        foreach (string module in modules)
        {
            string key = "lora_unet_" + module.Replace('.', '_');
            var lowRanks = content.LowRank.Where(l => l.Module == module).ToList();
            if (content.Dense.Any(d => d.Parameter == module + ".weight"))
                tensors.Add((key + ".diff", deltas[module + ".weight"], dtype));
            else if (lowRanks.Count > 0)
            {
                var (down, up, alpha) = KohyaPair(lowRanks, shapes[module + ".weight"], LoraTargets.DiffusersParts(model).GetValueOrDefault(module));
                tensors.Add((key + ".lora_down.weight", down, dtype));
                tensors.Add((key + ".lora_up.weight", up, dtype));
                tensors.Add((key + ".alpha", new HostTensor([], [alpha]), DType.F32));
            }
            if (content.Dense.Any(d => d.Parameter == module + ".bias"))
                tensors.Add((key + ".diff_b", deltas[module + ".bias"], dtype));
        }
    }

    private static (HostTensor Down, HostTensor Up, float Alpha) KohyaPair(List<LowRankDelta> lowRanks, int[] shape, List<(string Alias, int RowOffset, int Rows)>? parts)
    {
        int rows = shape[0], columns = shape[1];
        float fileScale = lowRanks.Select(l => l.Scale).FirstOrDefault(s => s != 0, 1f);
        if (lowRanks.Count == 1 && lowRanks[0].RowOffset == 0 && lowRanks[0].Rows == rows)
            return (lowRanks[0].Down, lowRanks[0].Up, lowRanks[0].Scale * lowRanks[0].Rank);
        // One block per row block of the split, all at the largest rank, when every adapter is exactly one block.
        bool uniform = parts != null && lowRanks.All(l => parts.Count(p => p.RowOffset == l.RowOffset && p.Rows == l.Rows) == 1) &&
                       lowRanks.Select(l => l.RowOffset).Distinct().Count() == lowRanks.Count;
        var blocks = uniform
            ? parts!.Select(p => (p.RowOffset, Adapter: lowRanks.FirstOrDefault(l => l.RowOffset == p.RowOffset), Rank: lowRanks.Max(l => l.Rank))).ToList()
            : lowRanks.Select(l => (l.RowOffset, Adapter: (LowRankDelta?)l, l.Rank)).ToList();
        int total = blocks.Sum(b => b.Rank);
        var down = new HostTensor(total, columns);
        var up = new HostTensor(rows, total);
        int offset = 0;
        foreach (var (_, adapter, rank) in blocks)
        {
            if (adapter != null)
            {
                Array.Copy(adapter.Down.Data, 0, down.Data, offset * columns, adapter.Down.Data.Length);
                float blockScale = adapter.Scale / fileScale;
                for (int r = 0; r < adapter.Rows; r++)
                    for (int k = 0; k < adapter.Rank; k++)
                        up.Data[(adapter.RowOffset + r) * total + offset + k] = adapter.Up.Data[r * adapter.Rank + k] * blockScale;
            }
            offset += rank;
        }
        return (down, up, fileScale * total);
    }

    /// <summary>
    /// PEFT keeps alpha outside the weights, so each layer's scale is folded into lora_B (alpha = rank). Every adapter
    /// is padded to one rank R, because diffusers before "lora_adapter_metadata" takes lora_alpha from the first
    /// adapter's rank; a full-weight change is an exact full-rank pair (A = I, B = ΔW, or A = ΔW, B = I) of rank
    /// k = min(rows, in), with lora_B.bias for a bias change, listed in rank_pattern at lora_alpha R, so B carries k/R.
    /// </summary>
    private static void AddDiffusers(List<(string, HostTensor, DType)> tensors, Dictionary<string, string> metadata, LoraContent content, ModelDescriptor model, DType dtype)
    {
        var aliases = LoraTargets.Aliases(model, LoraTargets.DiffusersFormat).GroupBy(a => a.Alias, a => a.Piece).ToDictionary(g => g.Key, g => g.ToList());
        var aliasedModules = aliases.Values.SelectMany(p => p).Select(p => p.Module).ToHashSet();
        foreach (string module in content.LowRank.Select(l => l.Module).Concat(content.Dense.Select(d => ModuleOf(d.Parameter))).Distinct())
            if (!aliasedModules.Contains(module))
                throw new ArgumentException($"{module} has no diffusers name in the schema of {model.Name}; it cannot be written in the diffusers format");

        var pairs = new List<(string Alias, HostTensor Down, HostTensor Up, HostTensor? Bias, bool Dense)>();
        foreach (var (alias, pieces) in aliases.OrderBy(a => a.Key, StringComparer.Ordinal))
        {
            int rows = pieces.Max(p => p.AliasRow + p.Rows);
            int columns = model.Parameters.First(p => p.Name == pieces[0].Module + ".weight").Shape[1];
            // Each low-rank change restricted to this alias's rows, placed at the alias's own row order.
            var factors = new List<(HostTensor Down, HostTensor Up)>();
            HostTensor? dense = null, bias = null;
            foreach (var piece in pieces)
            {
                foreach (var update in content.LowRank.Where(l => l.Module == piece.Module))
                {
                    int start = Math.Max(update.RowOffset, piece.RowOffset), end = Math.Min(update.RowOffset + update.Rows, piece.RowOffset + piece.Rows);
                    if (start >= end) continue;
                    var up = new HostTensor(rows, update.Rank);
                    for (int r = start; r < end; r++)
                        for (int k = 0; k < update.Rank; k++)
                            up.Data[(piece.AliasRow + r - piece.RowOffset) * update.Rank + k] = update.Up.Data[(r - update.RowOffset) * update.Rank + k] * update.Scale;
                    factors.Add((update.Down, up));
                }
                foreach (var update in content.Dense.Where(d => ModuleOf(d.Parameter) == piece.Module))
                {
                    bool isBias = update.Parameter.EndsWith(".bias", StringComparison.Ordinal);
                    int width = isBias ? 1 : columns;
                    var target = isBias ? bias ??= new HostTensor(rows) : dense ??= new HostTensor(rows, columns);
                    int start = Math.Max(update.RowOffset, piece.RowOffset), end = Math.Min(update.RowOffset + update.Rows, piece.RowOffset + piece.Rows);
                    for (int r = start; r < end; r++)
                        for (int c = 0; c < width; c++)
                            target.Data[(piece.AliasRow + r - piece.RowOffset) * width + c] += update.Value.Data[(r - update.RowOffset) * width + c];
                }
            }
            if (factors.Count == 0 && dense == null && bias == null) continue;
            if (dense != null || (factors.Count == 0 && bias != null))
            {
                dense ??= new HostTensor(rows, columns);
                foreach (var (down, up) in factors) LoraContent.AddProduct(dense, new LowRankDelta("", 0, down, up, 1f));
                var (a, b) = FullRank(dense);
                pairs.Add((alias, a, b, bias, true));
            }
            else pairs.Add((alias, Stack(factors.Select(f => f.Down), columns), Concatenate(factors.Select(f => f.Up), rows), bias, false));
        }

        var lowRankPairs = pairs.Where(p => !p.Dense).ToList();
        int commonRank = (lowRankPairs.Count > 0 ? lowRankPairs : pairs).Max(p => p.Down.Shape[0]);
        bool withBias = pairs.Any(p => p.Bias != null);
        string prefix = pairs[0].Alias.Contains('.') ? pairs[0].Alias[..pairs[0].Alias.IndexOf('.')] : "";
        var rankPattern = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var (alias, down, up, bias, _) in pairs)
        {
            int rank = down.Shape[0];
            float fold = 1f;
            HostTensor a = down, b = up;
            if (rank <= commonRank) (a, b) = (PadRows(down, commonRank), PadColumns(up, commonRank));
            else
            {
                rankPattern[prefix.Length > 0 ? alias[(prefix.Length + 1)..] : alias] = rank;
                fold = (float)rank / commonRank;
                b = Scaled(up, fold);
            }
            tensors.Add((alias + ".lora_A.weight", a, dtype));
            tensors.Add((alias + ".lora_B.weight", b, dtype));
            if (withBias) tensors.Add((alias + ".lora_B.bias", bias is null ? new HostTensor(up.Shape[0]) : Scaled(bias, fold), dtype));
        }

        // diffusers' own save (lora_base.write_lora_layers): LoraConfig as JSON, each key prefixed by the component.
        string P(string key) => prefix.Length > 0 ? prefix + "." + key : key;
        var config = new Dictionary<string, object>
        {
            [P("r")] = commonRank,
            [P("lora_alpha")] = commonRank,
            [P("rank_pattern")] = rankPattern,
            [P("alpha_pattern")] = new Dictionary<string, int>(),
            [P("target_modules")] = pairs.Select(p => prefix.Length > 0 ? p.Alias[(prefix.Length + 1)..] : p.Alias).ToList(),
            [P("lora_bias")] = withBias,
        };
        metadata["lora_adapter_metadata"] = JsonSerializer.Serialize(config);
        metadata["alpha_folded_into_lora_B"] = "true";
    }

    /// <summary>An exact factorisation of a dense change of rank min(rows, in): the identity on the smaller side.</summary>
    private static (HostTensor Down, HostTensor Up) FullRank(HostTensor dense)
    {
        int rows = dense.Shape[0], columns = dense.Shape[1];
        if (columns <= rows) return (Identity(columns), dense);
        return (dense, Identity(rows));
    }

    private static HostTensor Identity(int size)
    {
        var identity = new HostTensor(size, size);
        for (int i = 0; i < size; i++) identity.Data[i * size + i] = 1f;
        return identity;
    }

    private static HostTensor Stack(IEnumerable<HostTensor> downs, int columns)
    {
        var list = downs.ToList();
        return new HostTensor([list.Sum(d => d.Shape[0]), columns], list.SelectMany(d => d.Data).ToArray());
    }

    private static HostTensor Concatenate(IEnumerable<HostTensor> ups, int rows)
    {
        var list = ups.ToList();
        int total = list.Sum(u => u.Shape[1]);
        var result = new HostTensor(rows, total);
        int offset = 0;
        foreach (var up in list)
        {
            for (int r = 0; r < rows; r++) Array.Copy(up.Data, r * up.Shape[1], result.Data, r * total + offset, up.Shape[1]);
            offset += up.Shape[1];
        }
        return result;
    }

    private static HostTensor PadRows(HostTensor down, int rank)
    {
        if (down.Shape[0] == rank) return down;
        var padded = new HostTensor(rank, down.Shape[1]);
        Array.Copy(down.Data, padded.Data, down.Data.Length);
        return padded;
    }

    private static HostTensor PadColumns(HostTensor up, int rank) => up.Shape[1] == rank ? up : Concatenate([up, new HostTensor(up.Shape[0], rank - up.Shape[1])], up.Shape[0]);

    private static HostTensor Scaled(HostTensor tensor, float factor) => new((int[])tensor.Shape.Clone(), tensor.Data.Select(v => v * factor).ToArray());

    private static string ModuleOf(string parameter) => parameter[..parameter.LastIndexOf('.')];

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
        return metadata;
    }
}
