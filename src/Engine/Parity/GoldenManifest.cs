using System.Text.Json;

namespace InFluxEdit.Parity;

/// <summary>One case of a golden manifest.json (tests/golden).</summary>
public sealed class GoldenCase
{
    private readonly JsonElement _json;

    public GoldenCase(string name, JsonElement json)
    {
        Name = name;
        _json = json;
    }

    /// <summary>
    /// The least tolerance any tensor gets: 0 (the manifest's own), or a lower precision's bar (see
    /// <see cref="ParityRunner.BFloat16Tolerance"/>).
    /// </summary>
    public double ToleranceFloor { get; init; }

    public string Name { get; }
    public string Kind => String("kind") ?? "";
    public string? Data => String("data");
    public string? InputsFrom => String("inputs_from");

    public IReadOnlyList<string> Weights =>
        _json.TryGetProperty("weights", out var w) && w.ValueKind == JsonValueKind.Array
            ? w.EnumerateArray().Select(e => e.GetString()!).ToList()
            : Array.Empty<string>();

    /// <summary>A named entry of the case's "files" object (an input image, say), a file name in the golden folder.</summary>
    public string? File(string key) =>
        _json.TryGetProperty("files", out var files) && files.ValueKind == JsonValueKind.Object &&
        files.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()
            : null;

    /// <summary>The case's JSON, for kind-specific sections (a LoRA case's "lora").</summary>
    public JsonElement Json => _json;

    public string? String(string property) =>
        _json.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public double? Number(string property) =>
        _json.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    /// <summary>The tolerance for a tensor: the longest matching name prefix, else "default", else 1e-4; at least <see cref="ToleranceFloor"/>.</summary>
    public double ToleranceFor(string tensor) => Math.Max(ToleranceFloor, ManifestToleranceFor(tensor));

    private double ManifestToleranceFor(string tensor)
    {
        if (!_json.TryGetProperty("tolerance", out var t) || t.ValueKind != JsonValueKind.Object) return 1e-4;
        double? best = null;
        int bestLength = -1;
        foreach (var p in t.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number) continue;
            if (p.Name == "default" && bestLength < 0) best = p.Value.GetDouble();
            else if (tensor.StartsWith(p.Name, StringComparison.Ordinal) && p.Name.Length > bestLength)
            {
                best = p.Value.GetDouble();
                bestLength = p.Name.Length;
            }
        }
        return best ?? 1e-4;
    }
}

public sealed class GoldenManifest
{
    private GoldenManifest(string directory, IReadOnlyList<GoldenCase> cases)
    {
        Directory = directory;
        Cases = cases;
    }

    public string Directory { get; }
    public IReadOnlyList<GoldenCase> Cases { get; }

    public GoldenCase? Find(string name) => Cases.FirstOrDefault(c => c.Name == name);

    public string PathOf(string fileName) => Path.Combine(Directory, fileName);

    public static GoldenManifest Load(string directory)
    {
        string path = Path.Combine(directory, "manifest.json");
        if (!File.Exists(path))
            throw new FileNotFoundException($"no manifest.json in {Path.GetFullPath(directory)}: point parity at a golden folder such as tests/golden", path);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}");
        }
        if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("cases", out var cases) || cases.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path} is not a golden manifest: it must be a JSON object with a \"cases\" object; point parity at a golden folder such as tests/golden");
        return new GoldenManifest(directory, cases.EnumerateObject().Select(c => new GoldenCase(c.Name, c.Value.Clone())).ToList());
    }
}
