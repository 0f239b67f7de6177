using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;

namespace InFluxEdit.Tests.Models;

/// <summary>Variants of the golden tiny checkpoint: renamed keys, other metadata, extra tensors.</summary>
internal static class CheckpointFiles
{
    public const string TinyBf16 = "flux-tiny-bf16.safetensors";

    /// <summary>The golden file's own tensors as a parameter table: what a model compiled for it expects.</summary>
    public static List<ParameterInfo> TableOf(string goldenFile)
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(goldenFile));
        return file.Tensors.Select(t => new ParameterInfo(t.Name, t.Shape, t.DType)).ToList();
    }

    public static string RewriteGolden(
        string destination,
        Func<string, string>? rename = null,
        IReadOnlyDictionary<string, string>? metadata = null,
        bool keepMetadata = true,
        Func<TensorEntry, bool>? keep = null,
        IEnumerable<RawTensor>? extra = null)
    {
        using var source = SafeTensorsFile.Open(TestPaths.Golden(TinyBf16));
        var tensors = source.Tensors.Where(t => keep?.Invoke(t) ?? true)
            .Select(t => RawTensor.From(source, t) with { Name = rename?.Invoke(t.Name) ?? t.Name })
            .Concat(extra ?? []);
        SafeTensorsWriter.WriteRaw(destination, tensors, metadata ?? (keepMetadata ? source.Metadata : null));
        return destination;
    }
}
