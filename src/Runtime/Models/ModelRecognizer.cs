using System.Text;
using System.Text.Json;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// Tells which compiled model a checkpoint is for. The reference implementations store their configuration in
/// <c>__metadata__["config"]</c>; where it is present it decides, and the tensor table confirms or breaks ties.
/// Without it the tensor names and shapes must match one model exactly.
/// </summary>
public static class ModelRecognizer
{
    private const string ConfigKey = "config";
    private const int DifferencesShown = 5;

    public static ModelMatch Recognize(IWeightFile file, IEnumerable<ModelDescriptor> candidates) =>
        Recognize(file.Path, ReadConfigEntries(file), CheckpointKeys.Of(file), candidates);

    /// <summary>
    /// A model stored in several files (Hugging Face shards), whose configuration is a separate config.json (null when
    /// there is none): the tensors of all files together are compared with the schemas.
    /// </summary>
    public static ModelMatch Recognize(IReadOnlyList<IWeightFile> files, string? configJson, IEnumerable<ModelDescriptor> candidates)
    {
        if (files.Count == 0) throw new ArgumentException("no weight files were given", nameof(files));
        var config = configJson != null ? ParseConfig(configJson) : ReadConfigEntries(files[0]);
        string what = files.Count == 1 ? files[0].Path : $"{files[0].Path} and {files.Count - 1} more shard(s)";
        return Recognize(what, config, files.SelectMany(CheckpointKeys.Of).ToList(), candidates);
    }

    private static ModelMatch Recognize(string what, List<KeyValuePair<string, string>>? config, IReadOnlyList<CheckpointTensor> tensors,
        IEnumerable<ModelDescriptor> candidates)
    {
        List<ModelDescriptor> models = candidates.ToList();
        if (models.Count == 0)
            throw new ModelNotRecognizedException($"Cannot recognise the model in '{what}': no model schemas were given to compare it with.");

        var tableMatches = models.Where(m => TensorDifferences(m, tensors).Count == 0).ToList();
        string tableReason = $"all {tensors.Count} tensors have the schema's names and shapes";

        // A config that shares no parameter with any candidate (another project's naming) cannot tell them apart.
        bool configDecides = config is not null && models.Any(m => SharedParams(m, config).Any());
        if (configDecides)
        {
            var configMatches = models.Where(m => SharedParams(m, config!).Any() && ConfigDifferences(m, config!).Count == 0).ToList();
            var both = configMatches.Intersect(tableMatches).ToList();
            if (both.Count == 1)
                return new ModelMatch(both[0], $"its config matches {Describe(SharedParams(both[0], config!))} and {tableReason}");
            if (configMatches.Count == 1)
                return new ModelMatch(configMatches[0],
                    $"its config matches {Describe(SharedParams(configMatches[0], config!))}; its tensors differ from the schema " +
                    "(loading lists how)");
            if (configMatches.Count > 1)
                throw Ambiguous(what, both.Count > 1 ? both : configMatches);
        }
        else
        {
            if (tableMatches.Count == 1)
                return new ModelMatch(tableMatches[0], $"{tableReason} (the file has {(config is null ? "no config" : "no config parameter any schema knows")})");
            if (tableMatches.Count > 1)
                throw Ambiguous(what, tableMatches);
        }
        throw NotRecognized(what, models, config, tensors);
    }

    /// <summary>
    /// <c>__metadata__["config"]</c> as parameter name → JSON text of its value, or null when the file has no
    /// config or it is not a JSON object.
    /// </summary>
    public static IReadOnlyDictionary<string, string>? ReadConfig(IWeightFile file) =>
        ReadConfigEntries(file)?.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);

    // In the file's order, so a suggested schema lists parameters as the reference wrote them.
    private static List<KeyValuePair<string, string>>? ReadConfigEntries(IWeightFile file) =>
        file.Metadata.TryGetValue(ConfigKey, out string? text) ? ParseConfig(text) : null;

    private static List<KeyValuePair<string, string>>? ParseConfig(string text)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(text);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                return null;
            return document.RootElement.EnumerateObject().Select(p => KeyValuePair.Create(p.Name, p.Value.GetRawText())).ToList();
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static IEnumerable<string> SharedParams(ModelDescriptor model, List<KeyValuePair<string, string>> config) =>
        config.Select(c => c.Key).Where(model.Params.ContainsKey);

    private static List<string> ConfigDifferences(ModelDescriptor model, List<KeyValuePair<string, string>> config) =>
        config.Where(c => model.Params.TryGetValue(c.Key, out string? value) && !JsonValuesEqual(c.Value, value))
            .Select(c => $"{c.Key} is {c.Value} here, the schema has {model.Params[c.Key]}")
            .ToList();

    private static List<string> TensorDifferences(ModelDescriptor model, IReadOnlyList<CheckpointTensor> tensors)
    {
        var byKey = new Dictionary<string, CheckpointTensor>(StringComparer.Ordinal);
        foreach (CheckpointTensor tensor in tensors) byKey.TryAdd(model.CanonicalKey(tensor.Key), tensor);
        var wanted = new HashSet<string>(model.Parameters.Select(p => p.Name), StringComparer.Ordinal);

        var misShaped = new List<string>();
        var missing = new List<string>();
        foreach (ParameterInfo parameter in model.Parameters)
        {
            if (!byKey.TryGetValue(parameter.Name, out CheckpointTensor? tensor))
                missing.Add($"{parameter.Name} {HostTensor.FormatShape(parameter.Shape)} is missing");
            else if (!tensor.Shape.AsSpan().SequenceEqual(parameter.Shape))
                misShaped.Add($"{parameter.Name} is {HostTensor.FormatShape(tensor.Shape)} here, the schema expects {HostTensor.FormatShape(parameter.Shape)}");
        }
        var unexpected = tensors.Select(t => model.CanonicalKey(t.Key)).Where(key => !wanted.Contains(key) && !model.Ignores(key))
            .Select(key => $"{key} is not in the schema");
        // Shapes first: a wrong shape says most about which variant a file is.
        return misShaped.Concat(missing).Concat(unexpected).ToList();
    }

    private static ModelNotRecognizedException Ambiguous(string what, List<ModelDescriptor> matches) =>
        new($"Cannot recognise the model in '{what}': it fits {string.Join(", ", matches.Select(m => $"{m.Name} ({m.SchemaFile})"))} " +
            "equally. Their schemas have the same parameters and tensors; give one a parameter that tells them apart.");

    private static ModelNotRecognizedException NotRecognized(
        string what, List<ModelDescriptor> models, List<KeyValuePair<string, string>>? config, IReadOnlyList<CheckpointTensor> tensors)
    {
        // The closest schema first, and named in the first line: the line a reader sees when the rest is cut.
        var byCloseness = models.Select(model =>
            {
                var differences = (config is null ? [] : ConfigDifferences(model, config)).Concat(TensorDifferences(model, tensors)).ToList();
                if (differences.Count == 0)
                    differences.Add($"{model.SchemaFile} has none of the parameters of the file's config");
                return (Model: model, Differences: differences);
            })
            .OrderBy(m => m.Differences.Count).ToList();
        var message = new StringBuilder();
        message.Append($"Cannot recognise the model in '{what}': no schema matches it");
        if (byCloseness.Count > 0)
            message.Append($"; the closest is {byCloseness[0].Model.Name} ({byCloseness[0].Differences.Count} difference{(byCloseness[0].Differences.Count == 1 ? "" : "s")}: {byCloseness[0].Differences[0]})");
        message.AppendLine(". How each differs:");
        foreach (var (model, differences) in byCloseness)
        {
            foreach (string difference in differences.Take(DifferencesShown))
                message.AppendLine($"  {model.Name}: {difference}");
            if (differences.Count > DifferencesShown)
                message.AppendLine($"  {model.Name}: … and {differences.Count - DifferencesShown} more");
        }
        if (config is not null)
        {
            message.AppendLine("If this is a new variant, add a schema file for it under schemas/ with the file's config as its \"params\" " +
                "block, and the build compiles a model for it:");
            message.AppendLine("  \"params\": {");
            for (int i = 0; i < config.Count; i++)
                message.AppendLine($"    \"{config[i].Key}\": {config[i].Value}{(i < config.Count - 1 ? "," : "")}");
            message.AppendLine("  }");
        }
        return new ModelNotRecognizedException(message.ToString().TrimEnd());
    }

    private static string Describe(IEnumerable<string> names)
    {
        var list = names.ToList();
        return list.Count <= 4 ? $"({string.Join(", ", list)})" : $"({string.Join(", ", list.Take(4))}, … {list.Count} parameters)";
    }

    /// <summary>Equality of JSON values as values: 4 equals 4.0, arrays elementwise, objects by key.</summary>
    internal static bool JsonValuesEqual(string left, string right)
    {
        try
        {
            using JsonDocument a = JsonDocument.Parse(left);
            using JsonDocument b = JsonDocument.Parse(right);
            return ElementsEqual(a.RootElement, b.RootElement);
        }
        catch (JsonException)
        {
            return string.Equals(left.Trim(), right.Trim(), StringComparison.Ordinal);
        }
    }

    private static bool ElementsEqual(JsonElement a, JsonElement b)
    {
        if (a.ValueKind != b.ValueKind) return false;
        switch (a.ValueKind)
        {
            case JsonValueKind.Number:
                return a.TryGetDecimal(out decimal x) && b.TryGetDecimal(out decimal y) ? x == y : a.GetDouble() == b.GetDouble();
            case JsonValueKind.String:
                return a.GetString() == b.GetString();
            case JsonValueKind.Array:
                return a.GetArrayLength() == b.GetArrayLength() && a.EnumerateArray().Zip(b.EnumerateArray()).All(p => ElementsEqual(p.First, p.Second));
            case JsonValueKind.Object:
                var left = a.EnumerateObject().OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
                var right = b.EnumerateObject().OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
                return left.Count == right.Count
                    && left.Zip(right).All(p => p.First.Name == p.Second.Name && ElementsEqual(p.First.Value, p.Second.Value));
            default:
                return true; // true, false and null carry no value beyond their kind
        }
    }
}
