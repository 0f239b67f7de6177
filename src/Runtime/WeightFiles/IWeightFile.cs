using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.WeightFiles;

/// <summary>
/// A tensor as a weights file stores it. <see cref="Format"/> is null for tensors no model can load (integers,
/// bools), whose name and shape still count when a file is matched against a model. <see cref="Shape"/> is
/// row-major, outermost dimension first, whatever order the file lists dimensions in.
/// </summary>
public sealed record StoredTensor(string Name, string FormatName, TensorFormat? Format, int[] Shape, long DataOffset, long ByteLength)
{
    public long ElementCount => HostTensor.ElementCount(Shape);

    /// <summary>
    /// The factor the stored values are multiplied by (in float32) to give the tensor's values: a scaled fp8
    /// checkpoint's <c>.scale_weight</c> (see <see cref="SafeTensors.ScaledFp8"/>), otherwise 1.
    /// </summary>
    public float Scale { get; init; } = 1f;

    /// <summary>Whether this is a scaled fp8 checkpoint's marker or a weight's scale tensor, which describe other tensors' values and are no weights themselves.</summary>
    public bool IsScaleMetadata { get; init; }

    public override string ToString() => $"{Name}: {FormatName}{HostTensor.FormatShape(Shape)}";
}

/// <summary>
/// An open weights file of any supported container (safetensors, GGUF), validated when opened: every tensor's bytes
/// lie inside the file, match its format and shape, and no two tensors share bytes. Spans stay valid until disposal.
/// </summary>
public interface IWeightFile : IDisposable
{
    string Path { get; }

    /// <summary>Text metadata (safetensors' <c>__metadata__</c>; GGUF's scalar key/values as invariant text).</summary>
    IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Every tensor of the file, in the file's order.</summary>
    IReadOnlyList<StoredTensor> StoredTensors { get; }

    /// <summary>The tensor's stored bytes, straight from the mapping; <paramref name="tensor"/> must come from this file.</summary>
    ReadOnlySpan<byte> GetStoredBytes(StoredTensor tensor);
}
