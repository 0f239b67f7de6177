using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using InFluxEdit.Runtime.IO;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>A tensor to write as it is stored: little-endian elements of <see cref="DType"/>.</summary>
public sealed record RawTensor(string Name, DType DType, int[] Shape, ReadOnlyMemory<byte> Data)
{
    /// <summary>A tensor of an open file, copied without conversion (valid while the file is open).</summary>
    public static RawTensor From(SafeTensorsFile file, TensorEntry entry) =>
        new(entry.Name, entry.DType, entry.Shape, file.GetMemory(entry));
}

/// <summary>
/// Writes safetensors files the way the reference implementation does (tensors ordered by alignment then name,
/// <c>__metadata__</c> first, header padded with spaces to 8 bytes), so the same tensors always give the same
/// bytes. Writes are atomic: a crash or error leaves either the old file or the complete new one, never half.
/// </summary>
public static class SafeTensorsWriter
{
    private const int ConversionChunkElements = 1 << 20;

    private static readonly JsonWriterOptions HeaderJson = new()
    {
        // serde_json, which writes the reference files, escapes only what JSON requires.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    /// <summary>Writes float32 tensors, stored as <paramref name="dtype"/> (BF16/F16 round to nearest even).</summary>
    public static void Write(
        string path,
        IEnumerable<KeyValuePair<string, HostTensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null,
        DType dtype = DType.F32)
    {
        var planned = tensors.Select(pair => new PlannedTensor(
            pair.Key, dtype.SafeTensorsName(), dtype.SizeInBytes(), ReferenceRank(dtype.ToFormat()), pair.Value.Shape,
            pair.Value.Length * dtype.SizeInBytes(), stream => WriteConverted(stream, pair.Value.Data, dtype)));
        WritePlanned(path, planned, metadata);
    }

    /// <summary>
    /// Writes tensors byte for byte (copying weights between files, changing names or metadata). Not an overload of
    /// Write: with collection expressions of target-typed <c>new(...)</c> the two would be ambiguous.
    /// </summary>
    public static void WriteRaw(string path, IEnumerable<RawTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        WriteEncoded(path, tensors.Select(t => new EncodedTensor(t.Name, t.DType.ToFormat(), t.Shape, t.Data)), metadata);

    /// <summary>Writes tensors already in a format safetensors stores (the float dtypes and fp8).</summary>
    public static void WriteEncoded(string path, IEnumerable<EncodedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        WriteStreamed(path, tensors.Select(t => t.Streamed()), metadata);

    /// <summary>
    /// Writes tensors in a format safetensors stores, each produced only when the writer reaches it (the header comes
    /// from their planned sizes), so the file is written holding about one tensor at a time.
    /// </summary>
    public static void WriteStreamed(string path, IEnumerable<StreamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var planned = tensors.Select(tensor =>
        {
            string dtypeName = SafeTensorsName(tensor.Format) ?? throw new ArgumentException(
                $"tensor '{tensor.Name}' is {tensor.Format}, which safetensors cannot store; write a .gguf file or choose a float or fp8 format");
            return new PlannedTensor(tensor.Name, dtypeName, tensor.Format.BlockBytes(), ReferenceRank(tensor.Format), tensor.Shape,
                tensor.ByteLength, tensor.WriteBytes);
        });
        WritePlanned(path, planned, metadata);
    }

    private static string? SafeTensorsName(TensorFormat format) => format switch
    {
        TensorFormat.F8_E4M3 => "F8_E4M3",
        TensorFormat.F8_E5M2 => "F8_E5M2",
        _ => format.AsDType()?.SafeTensorsName(),
    };

    private sealed record PlannedTensor(string Name, string DTypeName, int ElementBytes, int Rank, int[] Shape, long ByteLength, Action<Stream> WriteData);

    private static void WritePlanned(string path, IEnumerable<PlannedTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        // Everything that can be wrong with the input is found before the temporary file exists.
        List<PlannedTensor> ordered = tensors
            .OrderByDescending(t => t.ElementBytes)
            .ThenBy(t => t.Rank)
            .ThenBy(t => t.Name, StringComparer.Ordinal)
            .ToList();
        CheckNames(ordered);
        byte[] header = BuildHeader(ordered, metadata);

        AtomicFile.Write(path, stream =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            foreach (PlannedTensor tensor in ordered)
                StreamedTensor.WriteCounted(stream, tensor.Name, tensor.ByteLength, tensor.WriteData);
        });
    }

    private static void CheckNames(List<PlannedTensor> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (PlannedTensor tensor in tensors)
        {
            if (string.IsNullOrEmpty(tensor.Name))
                throw new ArgumentException("a tensor has an empty name");
            if (tensor.Name == SafeTensorsHeader.MetadataKey)
                throw new ArgumentException($"'{SafeTensorsHeader.MetadataKey}' is reserved for metadata and cannot name a tensor");
            if (!names.Add(tensor.Name))
                throw new ArgumentException($"two tensors are named '{tensor.Name}'");
        }
    }

    // The reference orders equal-sized dtypes by its dtype enum, descending: BF16 before F16, F8_E4M3 before F8_E5M2.
    private static int ReferenceRank(TensorFormat format) => format is TensorFormat.BF16 or TensorFormat.F8_E4M3 ? 0 : 1;

    private static byte[] BuildHeader(List<PlannedTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, HeaderJson))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(SafeTensorsHeader.MetadataKey);
                foreach (var item in metadata.OrderBy(m => m.Key, StringComparer.Ordinal))
                    json.WriteString(item.Key, item.Value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (PlannedTensor tensor in tensors)
            {
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", tensor.DTypeName);
                json.WriteStartArray("shape");
                foreach (int dim in tensor.Shape)
                    json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + tensor.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += tensor.ByteLength;
            }
            json.WriteEndObject();
        }
        // Padding keeps the data section 8-byte aligned, so mapped F64/F32 tensors are aligned too.
        int padding = (int)((8 - buffer.Length % 8) % 8);
        buffer.Write(Encoding.ASCII.GetBytes(new string(' ', padding)));
        return buffer.ToArray();
    }

    private static void WriteConverted(Stream stream, float[] values, DType dtype)
    {
        if (dtype == DType.F32)
        {
            stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            return;
        }
        byte[] chunk = new byte[Math.Min(values.Length, ConversionChunkElements) * dtype.SizeInBytes()];
        for (int start = 0; start < values.Length; start += ConversionChunkElements)
        {
            ReadOnlySpan<float> source = values.AsSpan(start, Math.Min(ConversionChunkElements, values.Length - start));
            Span<byte> target = chunk.AsSpan(0, source.Length * dtype.SizeInBytes());
            switch (dtype)
            {
                case DType.BF16:
                    BFloat16.FromSingle(source, target);
                    break;
                case DType.F16:
                    Float16.FromSingle(source, target);
                    break;
                case DType.F64:
                    for (int i = 0; i < source.Length; i++)
                        BinaryPrimitives.WriteDoubleLittleEndian(target.Slice(i * 8, 8), source[i]);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no conversion from float32");
            }
            stream.Write(target);
        }
    }
}
