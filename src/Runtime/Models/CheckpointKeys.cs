using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.Models;

/// <summary>A tensor of a checkpoint under the name a model looks it up by (<see cref="Key"/>).</summary>
internal sealed record CheckpointTensor(string Key, IWeightFile File, StoredTensor Stored)
{
    public int[] Shape => Stored.Shape;
    public string DTypeName => Stored.FormatName;
    public string StoredName => Stored.Name;
}

/// <summary>
/// How checkpoint tensor names map to model parameter names. ComfyUI saves full checkpoints with every
/// tensor under <c>model.diffusion_model.</c>; those load as if the prefix were not there.
/// </summary>
internal static class CheckpointKeys
{
    public const string ComfyUiPrefix = "model.diffusion_model.";

    public static IReadOnlyList<CheckpointTensor> Of(IWeightFile file)
    {
        // A scaled fp8 checkpoint's marker and scale tensors are part of its weights' values, not parameters.
        var stored = file.StoredTensors.Where(t => !t.IsScaleMetadata).ToList();
        int strip = stored.Count > 0 && stored.All(t => t.Name.StartsWith(ComfyUiPrefix, StringComparison.Ordinal)) ? ComfyUiPrefix.Length : 0;
        return stored.Select(t => new CheckpointTensor(t.Name[strip..], file, t)).ToList();
    }

    public static bool StripsComfyUiPrefix(IWeightFile file) =>
        Of(file).FirstOrDefault() is { } first && first.Key != first.StoredName;

    /// <summary>The dotted prefix (e.g. "transformer.") every key shares, or null. The last component of a name never counts.</summary>
    public static string? CommonPrefix(IReadOnlyCollection<string> keys)
    {
        if (keys.Count == 0) return null;
        string[]? common = null;
        foreach (string key in keys)
        {
            string[] parts = key.Split('.');
            string[] candidate = parts[..^1];
            if (common is null)
            {
                common = candidate;
                continue;
            }
            int shared = 0;
            while (shared < common.Length && shared < candidate.Length && common[shared] == candidate[shared]) shared++;
            common = common[..shared];
            if (common.Length == 0) return null;
        }
        return common is { Length: > 0 } ? string.Join('.', common) + "." : null;
    }
}
