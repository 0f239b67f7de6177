using System.Buffers.Binary;
using System.Text;
using InFluxEdit.Runtime.IO;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.Gguf;

/// <summary>
/// Writes GGUF v3 files: metadata in the given order, tensor infos in the given order (dimensions innermost first),
/// each tensor's data at the next multiple of the alignment. The header comes from the tensors' planned sizes and each
/// tensor's bytes are produced as the writer reaches it (<see cref="StreamedTensor"/>). Atomic, like every weights writer here.
/// </summary>
public static class GgufWriter
{
    /// <param name="metadata">Values of the GGUF types as <see cref="GgufFile.Values"/> returns them (arrays of one element type).</param>
    public static void Write(string path, IReadOnlyList<EncodedTensor> tensors, IEnumerable<KeyValuePair<string, object>>? metadata = null,
        int alignment = GgmlTypes.DefaultAlignment) =>
        Write(path, tensors.Select(t => t.Streamed()).ToList(), metadata, alignment);

    /// <inheritdoc cref="Write(string, IReadOnlyList{EncodedTensor}, IEnumerable{KeyValuePair{string, object}}?, int)"/>
    public static void Write(string path, IReadOnlyList<StreamedTensor> tensors, IEnumerable<KeyValuePair<string, object>>? metadata = null,
        int alignment = GgmlTypes.DefaultAlignment)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
            throw new ArgumentException($"the alignment {alignment} is not a power of two", nameof(alignment));
        var values = (metadata ?? []).Where(m => m.Key != GgmlTypes.AlignmentKey).ToList();
        if (alignment != GgmlTypes.DefaultAlignment)
            values.Insert(0, new(GgmlTypes.AlignmentKey, (uint)alignment));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var offsets = new List<long>();
        long offset = 0;
        foreach (StreamedTensor tensor in tensors)
        {
            if (!names.Add(tensor.Name)) throw new ArgumentException($"two tensors are named '{tensor.Name}'");
            GgmlTypes.TypeOf(tensor.Format);
            offsets.Add(offset);
            offset = Align(offset + tensor.ByteLength, alignment);
        }

        AtomicFile.Write(path, stream =>
        {
            var writer = new BinaryWriter(stream, new UTF8Encoding(false), leaveOpen: true);
            writer.Write(GgmlTypes.GgufMagic);
            writer.Write(GgmlTypes.Version);
            writer.Write((ulong)tensors.Count);
            writer.Write((ulong)values.Count);
            foreach (var (key, value) in values)
            {
                WriteString(writer, key);
                WriteValue(writer, value, key);
            }
            for (int i = 0; i < tensors.Count; i++)
            {
                StreamedTensor tensor = tensors[i];
                WriteString(writer, tensor.Name);
                writer.Write((uint)tensor.Shape.Length);
                for (int d = tensor.Shape.Length - 1; d >= 0; d--) writer.Write((ulong)tensor.Shape[d]);
                writer.Write(GgmlTypes.TypeOf(tensor.Format));
                writer.Write((ulong)offsets[i]);
            }
            writer.Flush();
            long dataStart = Align(stream.Position, alignment);
            Pad(stream, dataStart);
            for (int i = 0; i < tensors.Count; i++)
            {
                Pad(stream, dataStart + offsets[i]);
                tensors[i].WriteChecked(stream);
            }
        });
    }

    private static long Align(long position, int alignment) => (position + alignment - 1) / alignment * alignment;

    private static void Pad(Stream stream, long to)
    {
        while (stream.Position < to) stream.WriteByte(0);
    }

    private static void WriteString(BinaryWriter writer, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        writer.Write((ulong)bytes.Length);
        writer.Write(bytes);
    }

    private static GgufValueType TypeOf(object value, string key) => value switch
    {
        byte => GgufValueType.UInt8, sbyte => GgufValueType.Int8, ushort => GgufValueType.UInt16, short => GgufValueType.Int16,
        uint => GgufValueType.UInt32, int => GgufValueType.Int32, float => GgufValueType.Float32, bool => GgufValueType.Bool,
        string => GgufValueType.String, ulong => GgufValueType.UInt64, long => GgufValueType.Int64, double => GgufValueType.Float64,
        Array => GgufValueType.Array,
        _ => throw new ArgumentException($"metadata '{key}' is a {value.GetType().Name}, which GGUF cannot store"),
    };

    private static void WriteValue(BinaryWriter writer, object value, string key)
    {
        writer.Write((uint)TypeOf(value, key));
        WritePayload(writer, value, key);
    }

    private static void WritePayload(BinaryWriter writer, object value, string key)
    {
        switch (value)
        {
            case byte v: writer.Write(v); break;
            case sbyte v: writer.Write(v); break;
            case ushort v: writer.Write(v); break;
            case short v: writer.Write(v); break;
            case uint v: writer.Write(v); break;
            case int v: writer.Write(v); break;
            case float v: writer.Write(v); break;
            case bool v: writer.Write((byte)(v ? 1 : 0)); break;
            case string v: WriteString(writer, v); break;
            case ulong v: writer.Write(v); break;
            case long v: writer.Write(v); break;
            case double v: writer.Write(v); break;
            case Array array:
                var items = array.Cast<object>().ToList();
                GgufValueType elementType = items.Count > 0 ? TypeOf(items[0], key) : ElementTypeOf(array, key);
                writer.Write((uint)elementType);
                writer.Write((ulong)items.Count);
                foreach (object item in items)
                {
                    if (TypeOf(item, key) != elementType)
                        throw new ArgumentException($"metadata array '{key}' mixes {elementType} and {TypeOf(item, key)}; GGUF arrays hold one type");
                    WritePayload(writer, item, key);
                }
                break;
        }
    }

    private static GgufValueType ElementTypeOf(Array array, string key)
    {
        Type element = array.GetType().GetElementType()!;
        return element == typeof(object) ? GgufValueType.Array
            : TypeOf(element == typeof(string) ? "" : Activator.CreateInstance(element)!, key);
    }
}
