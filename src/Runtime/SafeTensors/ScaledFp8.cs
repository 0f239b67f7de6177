using System.Globalization;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>
/// ComfyUI's scaled fp8 checkpoints (flux1-dev-fp8 "scaled" files): a <c>scaled_fp8</c> marker tensor, and beside a
/// weight <c>P.weight</c> a float32 scalar <c>P.scale_weight</c>; the weight's value is the stored value times that
/// scale, multiplied in the compute dtype (comfy/ops.py's scaled_fp8_ops: <c>weight * scale_weight.to(weight.dtype)</c>),
/// so in float32 exactly decoded × scale, rounded once. <c>P.scale_input</c>, where present, only rescales inputs for
/// fp8 matrix multiplication on the GPU (ComfyUI's float path ignores it) and is not applied. The marker and scales
/// stay in the file's tensors, flagged as <see cref="StoredTensor.IsScaleMetadata"/>, so a copy keeps them.
/// </summary>
public static class ScaledFp8
{
    public const string Marker = "scaled_fp8";
    public const string WeightScaleSuffix = ".scale_weight";
    public const string InputScaleSuffix = ".scale_input";

    public delegate ReadOnlySpan<byte> BytesOf(StoredTensor tensor);

    /// <summary>The tensors with each scaled weight's <see cref="StoredTensor.Scale"/> set and the marker and scales flagged; unchanged without a marker.</summary>
    public static IReadOnlyList<StoredTensor> Attach(string path, IReadOnlyList<StoredTensor> tensors, BytesOf bytesOf)
    {
        StoredTensor? marker = tensors.FirstOrDefault(IsMarker);
        if (marker is null) return tensors;

        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var scales = new Dictionary<string, float>(StringComparer.Ordinal);
        var metadata = new HashSet<string>(StringComparer.Ordinal);
        foreach (StoredTensor tensor in tensors)
        {
            if (IsMarker(tensor))
            {
                metadata.Add(tensor.Name);
                continue;
            }
            if (ScaledWeightOf(tensor.Name) is not { } weight) continue;
            if (!byName.TryGetValue(weight, out StoredTensor? scaled) || scaled.Format is null)
                throw new SafeTensorsException(path,
                    $"'{tensor.Name}' scales '{weight}', which the file {(scaled is null ? "does not have" : $"holds as {scaled.FormatName}, not numbers")}.",
                    "The scaled fp8 checkpoint is incomplete or altered; fetch it again.");
            float value = ScalarValue(path, tensor, bytesOf(tensor));
            metadata.Add(tensor.Name);
            if (tensor.Name.EndsWith(WeightScaleSuffix, StringComparison.Ordinal)) scales[weight] = value;
        }
        if (scales.Count == 0)
            throw new SafeTensorsException(path,
                $"it has the '{marker.Name}' marker of a scaled fp8 checkpoint but no '*{WeightScaleSuffix}' tensors, so its fp8 weights' values are unknown.",
                "Fetch the complete file, or use an unscaled fp8 or bf16 checkpoint.");

        return tensors.Select(t => scales.TryGetValue(t.Name, out float scale) ? t with { Scale = scale }
            : metadata.Contains(t.Name) ? t with { IsScaleMetadata = true } : t).ToList();
    }

    /// <summary>The weight a scale tensor scales ("P.scale_weight", "P.scale_input" → "P.weight"); null for other names.</summary>
    public static string? ScaledWeightOf(string name) =>
        name.EndsWith(WeightScaleSuffix, StringComparison.Ordinal) ? name[..^WeightScaleSuffix.Length] + ".weight"
        : name.EndsWith(InputScaleSuffix, StringComparison.Ordinal) ? name[..^InputScaleSuffix.Length] + ".weight"
        : null;

    private static bool IsMarker(StoredTensor tensor) =>
        tensor.Name == Marker || tensor.Name.EndsWith("." + Marker, StringComparison.Ordinal);

    /// <summary>A scale is one float (shape [] or [1]) that is positive and finite, read exactly as stored.</summary>
    private static float ScalarValue(string path, StoredTensor tensor, ReadOnlySpan<byte> bytes)
    {
        if (tensor.Format?.AsDType() is null || tensor.ElementCount != 1)
            throw new SafeTensorsException(path,
                $"the scale '{tensor.Name}' is {tensor.FormatName}{HostTensor.FormatShape(tensor.Shape)}; a scaled fp8 checkpoint's scales are single float values (F32[] or F32[1]).",
                "The file is not a ComfyUI scaled fp8 checkpoint or it is damaged.");
        var value = new float[1];
        TensorDecoder.Decode(tensor.Format.Value, bytes, value);
        if (!(value[0] > 0 && float.IsFinite(value[0])))
            throw new SafeTensorsException(path,
                $"the scale '{tensor.Name}' is {value[0].ToString("G9", CultureInfo.InvariantCulture)}; a weight scale must be a positive finite number.",
                "The file is damaged; fetch it again.");
        return value[0];
    }
}
