using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;

namespace InFluxEdit.Runtime.WeightFiles;

/// <summary>What a conversion wrote: tensors per stored format, the bytes of tensor data, and tensors left out.</summary>
/// <see cref="Unquantized"/>: the weight matrices a quantized target left in their float format, because the recognised
/// <see cref="Model"/> (null when none was recognised or none asked) names them "unquantized".
public sealed record ConversionSummary(IReadOnlyDictionary<TensorFormat, int> TensorsByFormat, long DataBytes, IReadOnlyList<string> Skipped,
    string? Model = null, IReadOnlyList<string>? Unquantized = null);

/// <summary>
/// Converts weights files between safetensors and GGUF (the output's container is chosen by its extension) and
/// between formats. Without a target format every tensor keeps its format where the output container can hold it
/// and is decoded to float32 where it cannot (GGUF blocks into safetensors, fp8 into GGUF). A float target converts
/// every float tensor; fp8 and block formats apply to weight matrices only (see <see cref="QuantizationPlan"/>), and not to
/// the layers a recognised model keeps unquantized, so a converted file holds what quantizing that model at load holds.
/// </summary>
public static class WeightConverter
{
    /// <param name="models">Models to recognise the input as (its "unquantized" layers then keep their float format under a
    /// quantized target); null or an unrecognised file: every weight matrix is quantized.</param>
    public static ConversionSummary Convert(string input, string output, TensorFormat? to, IEnumerable<ModelDescriptor>? models = null)
    {
        bool toGguf = WeightFile.IsGgufPath(output);
        if (to is { } target && !CanHold(toGguf, target))
            throw new ArgumentException(toGguf
                ? $"GGUF cannot hold {target}; write '{output}' as .safetensors for fp8, or choose a GGUF format."
                : $"safetensors cannot hold {target}; name the output '{Path.ChangeExtension(output, ".gguf")}' to write GGUF.");
        if (Path.GetFullPath(input) == Path.GetFullPath(output))
            throw new ArgumentException($"the output '{output}' is the input; write the conversion to another file.");

        using IWeightFile file = WeightFile.Open(input);
        // Each tensor is read and encoded only when the writer reaches it, so a 24 GB checkpoint converts holding about
        // one tensor; tensors that keep their format go straight from the input's mapping to the output.
        var tensors = new List<StreamedTensor>();
        var skipped = new List<string>();
        // A scaled fp8 weight copied as stored keeps its scale tensors (and the file its marker) beside it, in
        // safetensors; one that is decoded (into GGUF, or to another format) has its scale applied to its values.
        ModelDescriptor? model = to is { } quantized && quantized.AsDType() == null && models != null ? Recognized(file, models) : null;
        var unquantizedKeys = model?.Parameters.Where(p => p.Unquantized).Select(p => p.Name).ToHashSet() ?? [];
        var unquantized = CheckpointKeys.Of(file).Where(t => unquantizedKeys.Contains(t.Key)).Select(t => t.StoredName).ToHashSet();
        var targets = file.StoredTensors.Where(t => t.Format != null && !t.IsScaleMetadata)
            .ToDictionary(t => t.Name, t => unquantized.Contains(t.Name)
                ? TargetFormat(t.Format!.Value, t.Shape, to: null, toGguf)
                : TargetFormat(t.Format!.Value, t.Shape, to, toGguf));
        bool CopiedAsStored(StoredTensor t) => targets[t.Name] == t.Format && (t.Scale == 1f || !toGguf);
        var scaledAsStored = file.StoredTensors.Where(t => t.Scale != 1f && CopiedAsStored(t)).Select(t => t.Name).ToHashSet();
        foreach (StoredTensor stored in file.StoredTensors)
        {
            if (stored.IsScaleMetadata)
            {
                bool carried = ScaledFp8.ScaledWeightOf(stored.Name) is { } weight ? scaledAsStored.Contains(weight) : scaledAsStored.Count > 0;
                if (carried) tensors.Add(new StreamedTensor(stored.Name, stored.Format!.Value, stored.Shape, stream => stream.Write(file.GetStoredBytes(stored))));
                else skipped.Add($"{stored.Name} (scaled fp8 bookkeeping: the scales are applied to the weights written)");
                continue;
            }
            if (stored.Format is null)
            {
                skipped.Add($"{stored.Name} ({stored.FormatName}: not a float tensor)");
                continue;
            }
            TensorFormat format = targets[stored.Name];
            tensors.Add(new StreamedTensor(stored.Name, format, stored.Shape, CopiedAsStored(stored)
                ? stream => stream.Write(file.GetStoredBytes(stored))
                : stream => stream.Write(TensorEncoder.Encode(format, file.ReadFloat32(stored).Data))));
        }

        if (toGguf)
            GgufWriter.Write(output, tensors, file is GgufFile gguf ? gguf.Values : file.Metadata.Select(m => new KeyValuePair<string, object>(m.Key, m.Value)));
        else
            SafeTensorsWriter.WriteStreamed(output, tensors, file.Metadata.Where(m => m.Key != GgmlTypes.AlignmentKey).ToDictionary());
        return new ConversionSummary(
            tensors.GroupBy(t => t.Format).ToDictionary(g => g.Key, g => g.Count()), tensors.Sum(t => t.ByteLength), skipped,
            model?.Name, unquantized.Order(StringComparer.Ordinal).ToList());
    }

    private static ModelDescriptor? Recognized(IWeightFile file, IEnumerable<ModelDescriptor> models)
    {
        try
        {
            return ModelRecognizer.Recognize(file, models).Model;
        }
        catch (ModelNotRecognizedException)
        {
            return null;
        }
    }

    private static bool CanHold(bool gguf, TensorFormat format) =>
        gguf ? GgmlTypes.IsGgufFormat(format) : !format.IsBlockQuantized();

    private static TensorFormat TargetFormat(TensorFormat current, int[] shape, TensorFormat? to, bool toGguf)
    {
        TensorFormat wanted = to switch
        {
            null => current,
            { } plain when plain.AsDType() != null => plain,
            { } quantized => QuantizationPlan.FormatFor(quantized, shape) ?? current,
        };
        return CanHold(toGguf, wanted) ? wanted : TensorFormat.F32;
    }
}
