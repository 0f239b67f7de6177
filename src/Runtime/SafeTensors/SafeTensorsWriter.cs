using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using InFluxEdit.Runtime.Tensors;

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
            pair.Key, dtype, pair.Value.Shape, pair.Value.Length * dtype.SizeInBytes(), stream => WriteConverted(stream, pair.Value.Data, dtype)));
        WritePlanned(path, planned, metadata);
    }

    /// <summary>
    /// Writes tensors byte for byte (copying weights between files, changing names or metadata). Not an overload of
    /// Write: with collection expressions of target-typed <c>new(...)</c> the two would be ambiguous.
    /// </summary>
    public static void WriteRaw(string path, IEnumerable<RawTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var planned = tensors.Select(tensor =>
        {
            long expected = HostTensor.ElementCount(tensor.Shape) * tensor.DType.SizeInBytes();
            if (tensor.Data.Length != expected)
                throw new ArgumentException(
                    $"tensor '{tensor.Name}' is {tensor.DType}{HostTensor.FormatShape(tensor.Shape)}, {expected} bytes, but {tensor.Data.Length} bytes were given");
            return new PlannedTensor(tensor.Name, tensor.DType, tensor.Shape, expected, stream => stream.Write(tensor.Data.Span));
        });
        WritePlanned(path, planned, metadata);
    }

    private sealed record PlannedTensor(string Name, DType DType, int[] Shape, long ByteLength, Action<Stream> WriteData);

    private static void WritePlanned(string path, IEnumerable<PlannedTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        // Everything that can be wrong with the input is found before the temporary file exists.
        List<PlannedTensor> ordered = tensors
            .OrderByDescending(t => t.DType.SizeInBytes())
            .ThenBy(t => ReferenceRank(t.DType))
            .ThenBy(t => t.Name, StringComparer.Ordinal)
            .ToList();
        CheckNames(ordered);
        byte[] header = BuildHeader(ordered, metadata);

        path = Path.GetFullPath(path);
        string temporary = $"{path}.tmp-{Convert.ToHexString(RandomNumberGenerator.GetBytes(6)).ToLowerInvariant()}";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                Span<byte> prefix = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                foreach (PlannedTensor tensor in ordered)
                {
                    long before = stream.Position;
                    tensor.WriteData(stream);
                    if (stream.Position - before != tensor.ByteLength)
                        throw new InvalidOperationException($"tensor '{tensor.Name}' wrote {stream.Position - before} bytes, its header entry says {tensor.ByteLength}");
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            DeleteQuietly(temporary);
            throw;
        }
    }

    // The write's own error is the one worth reporting; a failed cleanup must not replace it.
    private static void DeleteQuietly(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
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

    // The reference orders equal-sized dtypes by its dtype enum, descending: BF16 before F16.
    private static int ReferenceRank(DType dtype) => dtype == DType.BF16 ? 0 : 1;

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
                json.WriteString("dtype", tensor.DType.SafeTensorsName());
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
