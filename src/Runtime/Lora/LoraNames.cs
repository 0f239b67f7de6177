using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Lora;

/// <summary>Rows [RowOffset, RowOffset + Rows) of a linear layer's weight, rows [AliasRow, AliasRow + Rows) of an adapter's output.</summary>
public sealed record LoraPiece(string Module, int RowOffset, int Rows, int AliasRow);

/// <summary>
/// What an adapter name stands for: the row blocks its output lands in, its own output size and input size, and
/// which naming it belongs to (for reports).
/// </summary>
public sealed record LoraName(string Naming, IReadOnlyList<LoraPiece> Pieces, int Rows, int In)
{
    public IEnumerable<string> Modules => Pieces.Select(p => p.Module).Distinct();
}

/// <summary>
/// Every name an adapter of a model may have, built from its parameter table and its schema's "lora_formats"
/// (so nothing here knows a layer by name): the checkpoint's own module names (also under "diffusion_model." and as
/// kohya's "lora_unet_" + module with '.' → '_'), every alias of every format (also without its prefix), OneTrainer's
/// flattening of an alias ("lora_" + alias with '.' → '_', e.g. "lora_transformer_transformer_blocks_0_attn_to_q") and
/// SimpleTuner's ("lycoris_" + the alias without its prefix, flattened), as ComfyUI's model_lora_keys_unet names them.
/// </summary>
public sealed class LoraNames
{
    private readonly Dictionary<string, LoraName> _names = new(StringComparer.Ordinal);

    /// <summary>Prefixes of adapters that train a text encoder (kohya's lora_te*_, diffusers' text_encoder*.): passed over, reported.</summary>
    private static readonly string[] TextEncoderPrefixes = ["lora_te", "text_encoder", "te1.", "te2.", "te3.", "lycoris_te"];

    public LoraNames(ModelDescriptor model)
    {
        Model = model;
        var linears = LoraTargets.Linears(model).ToDictionary(l => l.Module, StringComparer.Ordinal);
        foreach (var (module, rows, inputs) in linears.Values)
        {
            var whole = new LoraName("checkpoint", [new LoraPiece(module, 0, rows, 0)], rows, inputs);
            _names.TryAdd(module, whole);
            _names.TryAdd("diffusion_model." + module, whole);
            _names.TryAdd("lora_unet_" + Flat(module), whole with { Naming = "kohya" });
        }
        foreach (var format in model.LoraAliases.Select(a => a.Format).Distinct())
        {
            foreach (var group in LoraTargets.Aliases(model, format).GroupBy(a => a.Alias, a => a.Piece))
            {
                string alias = group.Key;
                var pieceList = group.OrderBy(p => p.AliasRow).ToList();
                int rows = pieceList.Max(p => p.AliasRow + p.Rows), inputs = linears[pieceList[0].Module].In;
                var name = new LoraName(format, pieceList, rows, inputs);
                _names.TryAdd(alias, name);
                int dot = alias.IndexOf('.');
                if (dot > 0)
                {
                    _names.TryAdd(alias[(dot + 1)..], name);
                    _names.TryAdd("base_model.model." + alias[(dot + 1)..], name); // PEFT's own save_pretrained
                    _names.TryAdd("lycoris_" + Flat(alias[(dot + 1)..]), name with { Naming = "lycoris" }); // SimpleTuner's LyCORIS files
                }
                _names.TryAdd("lora_" + Flat(alias), name with { Naming = "onetrainer" });
            }
        }
    }

    public ModelDescriptor Model { get; }

    public bool TryResolve(string name, out LoraName target) => _names.TryGetValue(name, out target!);

    /// <summary>
    /// The layer a file of bare "weight"/"bias" keys holds (the seed's flux_x_embedder.safetensors): the longest
    /// name its file name ends with ('.' read as '_'), else the only linear layer of that weight shape.
    /// </summary>
    public bool TryResolveBare(string path, int[] weightShape, out LoraName target)
    {
        string stem = System.IO.Path.GetFileNameWithoutExtension(path);
        var byName = _names.Where(n => stem.EndsWith(Flat(n.Key), StringComparison.Ordinal) && n.Value.Pieces.Count == 1)
            .OrderByDescending(n => n.Key.Length).Select(n => n.Value).FirstOrDefault();
        var byShape = _names.Values.Where(n => n.Pieces.Count == 1 && n.Rows == weightShape[0] && n.In == weightShape[^1])
            .Select(n => n.Pieces[0].Module).Distinct().ToList();
        target = byName ?? (byShape.Count == 1 ? _names[byShape[0]] : null)!;
        return target != null;
    }

    public static bool IsTextEncoder(string key) => TextEncoderPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal));

    /// <summary>How a skipped key is grouped in the report: "lora_te1_*", "text_encoder.*", or the key itself.</summary>
    public static string GroupOf(string key)
    {
        if (!IsTextEncoder(key)) return key;
        int end = key.StartsWith("lora_", StringComparison.Ordinal) ? key.IndexOf('_', "lora_".Length) : key.IndexOf('.');
        return end > 0 ? key[..(end + 1)] + "*" : key;
    }

    private static string Flat(string name) => name.Replace('.', '_');
}
