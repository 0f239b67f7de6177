using System.Text.Json;
using System.Text.Unicode;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>
/// The JSON header of a safetensors file, checked against the data section it describes. Every check runs before
/// any tensor is touched, so a corrupt file fails at open with one message instead of as garbage weights later.
/// </summary>
internal sealed class SafeTensorsHeader
{
    public const string MetadataKey = "__metadata__";

    /// <summary>The limit the reference implementation enforces; real headers are well under 1 MB.</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const string SupportedDTypes = "F32, F16, BF16, F64, F8_E4M3, F8_E5M2";

    // dtypes of the safetensors format that DType cannot hold; their sizes still let us check offsets.
    private static readonly Dictionary<string, int> OtherDTypeSizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E5M2"] = 1, ["F8_E4M3"] = 1, ["F8_E8M0"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["I32"] = 4, ["U32"] = 4, ["I64"] = 8, ["U64"] = 8,
    };

    private SafeTensorsHeader(
        IReadOnlyDictionary<string, string> metadata, IReadOnlyList<TensorEntry> tensors, IReadOnlyList<OtherTensorEntry> others)
    {
        Metadata = metadata;
        Tensors = tensors;
        OtherTensors = others;
    }

    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyList<TensorEntry> Tensors { get; }
    public IReadOnlyList<OtherTensorEntry> OtherTensors { get; }

    public static SafeTensorsHeader Parse(string path, byte[] json, long dataSectionLength)
    {
        // The JSON parser checks UTF-8 inside strings only when they are read, so check the whole header first.
        if (!Utf8.IsValid(json))
            throw new SafeTensorsException(path, "the header is not valid UTF-8 JSON (it holds bytes that are not UTF-8).",
                "The file is corrupt or not a safetensors file; download or export it again.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new SafeTensorsException(path, $"the header is not valid UTF-8 JSON ({e.Message}).",
                "The file is corrupt or not a safetensors file; download or export it again.");
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsException(path, $"the header is a JSON {Describe(root.ValueKind)}, not an object of tensors.");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new List<TensorEntry>();
            var others = new List<OtherTensorEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new SafeTensorsException(path, $"the header names '{property.Name}' twice; a tensor name must be unique.");
                if (property.Name == MetadataKey)
                    ReadMetadata(path, property.Value, metadata);
                else
                    ReadEntry(path, property.Name, property.Value, tensors, others);
            }

            var ranges = tensors.Select(t => (t.Name, Begin: t.DataOffset, End: t.DataOffset + t.ByteLength))
                .Concat(others.Select(t => (t.Name, Begin: t.DataOffset, End: t.DataOffset + t.ByteLength)))
                .ToList();
            CheckWithinData(path, ranges, dataSectionLength);
            CheckNoOverlap(path, ranges);
            return new SafeTensorsHeader(metadata, tensors, others);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsException(path, $"'{MetadataKey}' is a JSON {Describe(value.ValueKind)}; it must be an object of string values.");
        foreach (JsonProperty item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new SafeTensorsException(path,
                    $"'{MetadataKey}.{item.Name}' is a JSON {Describe(item.Value.ValueKind)}; metadata values must be strings.",
                    "Writers store structured metadata as JSON text inside a string.");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw new SafeTensorsException(path, $"'{MetadataKey}' names '{item.Name}' twice.");
        }
    }

    private static void ReadEntry(
        string path, string name, JsonElement value, List<TensorEntry> tensors, List<OtherTensorEntry> others)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsException(path, $"tensor '{name}' is described by a JSON {Describe(value.ValueKind)}, not an object.");

        JsonElement dtypeElement = RequiredProperty(path, name, value, "dtype");
        if (dtypeElement.ValueKind != JsonValueKind.String)
            throw new SafeTensorsException(path, $"tensor '{name}' has dtype {dtypeElement.GetRawText()}, which is not a string.");
        string dtypeName = dtypeElement.GetString()!;
        int elementSize;
        bool isFloat = DTypeExtensions.TryParseSafeTensorsName(dtypeName, out DType dtype);
        if (isFloat)
            elementSize = dtype.SizeInBytes();
        else if (!OtherDTypeSizes.TryGetValue(dtypeName, out elementSize))
            throw new SafeTensorsException(path,
                $"tensor '{name}' has dtype '{dtypeName}', which InFluxEdit cannot read (supported: {SupportedDTypes}).",
                "Convert the file to one of those dtypes, e.g. bf16.");

        int[] shape = ReadShape(path, name, RequiredProperty(path, name, value, "shape"));
        (long begin, long end) = ReadOffsets(path, name, RequiredProperty(path, name, value, "data_offsets"));

        long expectedBytes = ByteCount(shape, elementSize) ?? throw new SafeTensorsException(path,
            $"tensor '{name}' has shape {HostTensor.FormatShape(shape)}, more bytes than any file can hold.");
        if (end - begin != expectedBytes)
            throw new SafeTensorsException(path,
                $"the header lies about sizes: tensor '{name}' ({dtypeName}{HostTensor.FormatShape(shape)}) needs {expectedBytes} bytes " +
                $"but its data_offsets [{begin}, {end}] span {end - begin}.",
                "The file is corrupt; export it again.");

        if (isFloat)
            tensors.Add(new TensorEntry(name, dtype, shape, begin, expectedBytes));
        else
            others.Add(new OtherTensorEntry(name, dtypeName, shape, begin, expectedBytes));
    }

    private static JsonElement RequiredProperty(string path, string name, JsonElement entry, string property) =>
        entry.TryGetProperty(property, out JsonElement value)
            ? value
            : throw new SafeTensorsException(path, $"tensor '{name}' has no '{property}'; every tensor needs dtype, shape and data_offsets.");

    private static int[] ReadShape(string path, string name, JsonElement shape)
    {
        if (shape.ValueKind != JsonValueKind.Array)
            throw new SafeTensorsException(path, $"tensor '{name}' has a shape that is a JSON {Describe(shape.ValueKind)}, not an array.");
        var dims = new int[shape.GetArrayLength()];
        int i = 0;
        foreach (JsonElement dim in shape.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt32(out int size) || size < 0)
                throw new SafeTensorsException(path,
                    $"tensor '{name}' has shape {shape.GetRawText()}; dimensions must be non-negative integers below 2^31.");
            dims[i++] = size;
        }
        return dims;
    }

    /// <summary>product(shape)·elementSize, or null when that does not fit a long (a hostile or corrupt header).</summary>
    private static long? ByteCount(int[] shape, int elementSize)
    {
        try
        {
            long bytes = elementSize;
            foreach (int dim in shape)
                bytes = checked(bytes * dim);
            return bytes;
        }
        catch (OverflowException)
        {
            return null;
        }
    }

    private static (long Begin, long End) ReadOffsets(string path, string name, JsonElement offsets)
    {
        if (offsets.ValueKind == JsonValueKind.Array && offsets.GetArrayLength() == 2
            && offsets[0].ValueKind == JsonValueKind.Number && offsets[0].TryGetInt64(out long begin)
            && offsets[1].ValueKind == JsonValueKind.Number && offsets[1].TryGetInt64(out long end)
            && begin >= 0 && begin <= end)
            return (begin, end);
        throw new SafeTensorsException(path,
            $"tensor '{name}' has data_offsets {offsets.GetRawText()}; they must be [begin, end] with 0 <= begin <= end.");
    }

    private static void CheckWithinData(string path, List<(string Name, long Begin, long End)> ranges, long dataSectionLength)
    {
        long needed = ranges.Count == 0 ? 0 : ranges.Max(r => r.End);
        if (needed > dataSectionLength)
            throw new SafeTensorsException(path,
                $"the file is truncated: expected {needed} bytes of tensor data, file has {dataSectionLength}.",
                "The download or copy was cut off; fetch the file again.");
    }

    private static void CheckNoOverlap(string path, List<(string Name, long Begin, long End)> ranges)
    {
        // Empty tensors own no bytes, so they may sit anywhere, even inside another tensor's range.
        var sorted = ranges.Where(r => r.End > r.Begin).OrderBy(r => r.Begin).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            var previous = sorted[i - 1];
            var current = sorted[i];
            if (current.Begin < previous.End)
                throw new SafeTensorsException(path,
                    $"tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{current.Name}' [{current.Begin}, {current.End}) overlap.",
                    "The header is corrupt; export the file again.");
        }
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };
}
