using InFluxEdit.Runtime.WeightFiles;
using System.Globalization;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Lora;

/// <summary>Several LoRA files applied at once (edit's --lora, convert's inputs), each at its own strength.</summary>
public static class LoraSet
{
    /// <summary>The scale of each of <paramref name="files"/> LoRA files: the --lora-scale values in order, 1 for the rest.</summary>
    public static float[] ScalesFor(int files, IReadOnlyList<float> scales)
    {
        if (scales.Count > files)
            throw new ArgumentException($"{scales.Count} --lora-scale values for {files} LoRA files");
        return Enumerable.Range(0, files).Select(i => i < scales.Count ? scales[i] : 1f).ToArray();
    }

    /// <summary>
    /// Every file read at its scale (1 where none is given) and merged; each file's load and what it skipped is logged.
    /// </summary>
    public static LoraContent Read(IReadOnlyList<string> paths, IReadOnlyList<float> scales, ModelDescriptor model, bool strict,
        Func<string, HostTensor>? baseWeights, TextWriter log)
    {
        var fileScales = ScalesFor(paths.Count, scales);
        var names = new LoraNames(model);
        var total = new LoraContent();
        for (int i = 0; i < paths.Count; i++)
        {
            float scale = fileScales[i];
            var content = LoraReader.Read(paths[i], names, new LoraReadOptions(scale, strict, baseWeights));
            var layers = content.LowRank.Select(l => l.Module + ".weight").Concat(content.Dense.Select(d => d.Parameter)).Distinct().Count();
            var whole = content.Dense.Select(d => d.Parameter).Distinct().Order(StringComparer.Ordinal).ToList();
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"lora: {paths[i]} ({string.Join(", ", content.Formats)}) at scale {scale}, {layers} weights changed") +
                (whole.Count > 0 ? $", full-weight changes to {string.Join(", ", whole)}" : ""));
            foreach (string line in content.SkipReport()) log.WriteLine($"lora: {line}");
            total.Add(content);
        }
        return total;
    }

    /// <summary>The base weights of a checkpoint by parameter name, read on demand (DoRA and whole weights are relative to them).</summary>
    public static Func<string, HostTensor> BaseWeightsOf(string checkpoint) => parameter =>
    {
        using var file = WeightFile.Open(checkpoint);
        var tensor = CheckpointKeys.Of(file).FirstOrDefault(t => t.Key == parameter && t.Stored.Format != null)
            ?? throw new LoraMismatchException($"the checkpoint {checkpoint} has no numeric tensor '{parameter}', which a LoRA changes relative to it");
        return file.ReadFloat32(tensor.Stored);
    };
}
