using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.Gguf;

/// <summary>
/// A GGUF v3 file (ggml's container: header, metadata key/values, tensor infos, aligned tensor data), memory-mapped
/// read-only. <see cref="Open"/> reads and checks everything before the first tensor is touched: the magic and
/// version, every length against the bytes left in the file (so a corrupt count cannot cause a huge allocation),
/// tensor types, shapes against sizes, offsets against the alignment and the end of the file, and overlaps.
/// GGUF lists dimensions innermost first; <see cref="StoredTensor.Shape"/> is row-major (reversed).
/// </summary>
public sealed unsafe class GgufFile : IWeightFile
{
    /// <summary>ggml's GGML_MAX_DIMS.</summary>
    private const int MaxDimensions = 4;

    /// <summary>
    /// Arrays of arrays are read recursively, 12 file bytes a level: without a limit a ~100 KB file overflows the stack,
    /// which ends the process with no message. Real metadata nests arrays once if at all.
    /// </summary>
    private const int MaxArrayNesting = 8;

    private readonly MappedFile _file;
    private readonly byte* _data;
    private readonly Dictionary<string, StoredTensor> _byName;
    private bool _disposed;

    private GgufFile(string path, uint version, int alignment, long dataStart, IReadOnlyDictionary<string, object> values,
        List<StoredTensor> tensors, MappedFile file)
    {
        Path = path;
        Version = version;
        Alignment = alignment;
        DataStart = dataStart;
        Values = values;
        Metadata = values.Where(v => v.Value is not Array)
            .ToDictionary(v => v.Key, v => Convert.ToString(v.Value, CultureInfo.InvariantCulture)!, StringComparer.Ordinal);
        StoredTensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _file = file;
        _data = file.Start + dataStart;
    }

    public string Path { get; }
    public uint Version { get; }
    public int Alignment { get; }

    /// <summary>Where the tensor data section starts in the file (tensor offsets count from here).</summary>
    public long DataStart { get; }

    /// <summary>
    /// Every metadata value as read: byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double,
    /// or an array of one of those (arrays of arrays are object[]).
    /// </summary>
    public IReadOnlyDictionary<string, object> Values { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public IReadOnlyList<StoredTensor> StoredTensors { get; }

    /// <summary>Whether the file starts with GGUF's magic (false for a missing or shorter file).</summary>
    public static bool HasMagic(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        Span<byte> magic = stackalloc byte[4];
        return stream.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && BinaryPrimitives.ReadUInt32LittleEndian(magic) == GgmlTypes.GgufMagic;
    }

    public static GgufFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("GGUF data is little-endian; this machine is big-endian.");
        path = System.IO.Path.GetFullPath(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            var reader = new HeaderReader(path, new BufferedStream(stream, 1 << 16), stream.Length);
            uint magic = reader.UInt32("the magic number");
            if (magic != GgmlTypes.GgufMagic)
                throw new GgufException(path, $"it does not start with the GGUF magic (found bytes {Convert.ToHexString(BitConverter.GetBytes(magic))}).",
                    "It is not a GGUF file (a safetensors file needs the .safetensors extension) or it is corrupt.");
            uint version = reader.UInt32("the version");
            if (version != GgmlTypes.Version)
                throw new GgufException(path, $"it is GGUF version {version}; InFluxEdit reads version {GgmlTypes.Version}.",
                    version < GgmlTypes.Version ? "Convert it with a current gguf tool (llama.cpp's gguf-py)." : "Update InFluxEdit or write the file as version 3.");
            ulong tensorCount = reader.UInt64("the tensor count");
            ulong valueCount = reader.UInt64("the metadata count");
            // Each tensor info takes at least 24 bytes and each key/value at least 13: a count the file cannot hold is corrupt.
            reader.RequireCount(tensorCount, 24, "tensor infos");
            reader.RequireCount(valueCount, 13, "metadata key/values");

            var values = new Dictionary<string, object>(StringComparer.Ordinal);
            for (ulong i = 0; i < valueCount; i++)
            {
                string key = reader.String("a metadata key");
                var type = (GgufValueType)reader.UInt32($"the type of metadata '{key}'");
                object value = reader.Value(type, key);
                if (!values.TryAdd(key, value))
                    throw new GgufException(path, $"metadata key '{key}' appears twice.", "The file is corrupt; convert it again.");
            }
            int alignment = ReadAlignment(path, values);

            var infos = new List<(string Name, int[] Shape, uint Type, ulong Offset)>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                string name = reader.String("a tensor name");
                uint dimensions = reader.UInt32($"the dimension count of tensor '{name}'");
                if (dimensions > MaxDimensions)
                    throw new GgufException(path, $"tensor '{name}' has {dimensions} dimensions; GGUF tensors have at most {MaxDimensions}.", "The file is corrupt.");
                var shape = new int[dimensions];
                for (int d = 0; d < dimensions; d++)
                {
                    ulong size = reader.UInt64($"a dimension of tensor '{name}'");
                    if (size > int.MaxValue)
                        throw new GgufException(path, $"tensor '{name}' has a dimension of {size}, more than InFluxEdit's limit of 2^31 − 1.", "The file is corrupt.");
                    shape[dimensions - 1 - d] = (int)size; // innermost first in the file, last in a row-major shape
                }
                uint type = reader.UInt32($"the type of tensor '{name}'");
                ulong offset = reader.UInt64($"the offset of tensor '{name}'");
                infos.Add((name, shape, type, offset));
            }
            long dataStart = (reader.Position + alignment - 1) / alignment * alignment;
            List<StoredTensor> tensors = CheckTensors(path, infos, alignment, stream.Length - Math.Min(dataStart, stream.Length));

            return new GgufFile(path, version, alignment, dataStart, values, tensors, MappedFile.Map(stream));
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static int ReadAlignment(string path, Dictionary<string, object> values)
    {
        if (!values.TryGetValue(GgmlTypes.AlignmentKey, out object? value))
            return GgmlTypes.DefaultAlignment;
        if (value is uint alignment && alignment > 0 && alignment <= 1 << 30 && (alignment & (alignment - 1)) == 0)
            return (int)alignment;
        throw new GgufException(path, $"'{GgmlTypes.AlignmentKey}' is {Describe(value)}; it must be a power of two stored as uint32.", "The file is corrupt.");
    }

    private static List<StoredTensor> CheckTensors(string path, List<(string Name, int[] Shape, uint Type, ulong Offset)> infos, int alignment, long dataLength)
    {
        var tensors = new List<StoredTensor>(infos.Count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, type, offset) in infos)
        {
            if (!names.Add(name))
                throw new GgufException(path, $"two tensors are named '{name}'.", "The file is corrupt; convert it again.");
            if (!GgmlTypes.TryGetFormat(type, out TensorFormat format))
                throw new GgufException(path, $"tensor '{name}' is stored as {GgmlTypes.Describe(type)}, which InFluxEdit cannot read (it reads {GgmlTypes.ReadableNames}).",
                    "Use a file quantized to one of those (city96's Q8_0, Q5_K_S, Q4_K_S, … files are).");
            string shapeText = InFluxEdit.Runtime.Tensors.HostTensor.FormatShape(shape);
            long byteLength = format.ByteCount(shape) ?? throw new GgufException(path,
                format.Fits(shape)
                    ? $"tensor '{name}' ({format}{shapeText}) has more bytes than any file can hold."
                    : shape.Length == 0
                        ? $"tensor '{name}' is a {format} scalar, but {format} packs {format.BlockElements()}-element blocks along a dimension."
                        : $"tensor '{name}' is {format}{shapeText}, but its innermost dimension {shape[^1]} is not a whole number of {format.BlockElements()}-element blocks.",
                "The file is corrupt.");
            if (offset % (ulong)alignment != 0)
                throw new GgufException(path, $"tensor '{name}' starts at data offset {offset}, not a multiple of the file's alignment {alignment}.", "The file is corrupt.");
            if (offset > (ulong)dataLength || (long)offset > dataLength - byteLength)
                throw new GgufException(path,
                    $"the file is truncated: tensor '{name}' ({format}{shapeText}, {byteLength} bytes at data offset {offset}) ends past the {dataLength} bytes of tensor data.",
                    "The download or copy was cut off; fetch the file again.");
            tensors.Add(new StoredTensor(name, format.ToString(), format, shape, (long)offset, byteLength));
        }
        var sorted = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.DataOffset).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            if (sorted[i].DataOffset < sorted[i - 1].DataOffset + sorted[i - 1].ByteLength)
                throw new GgufException(path,
                    $"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap (data offsets {sorted[i - 1].DataOffset} and {sorted[i].DataOffset}).",
                    "The file is corrupt; convert it again.");
        }
        return tensors;
    }

    private static string Describe(object value) => value is Array array ? $"an array of {array.Length}" : $"{value} ({value.GetType().Name})";

    public ReadOnlySpan<byte> GetStoredBytes(StoredTensor tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!ReferenceEquals(_byName.GetValueOrDefault(tensor.Name), tensor))
            throw new ArgumentException($"tensor '{tensor.Name}' does not come from '{Path}'; look it up in this file.", nameof(tensor));
        if (tensor.ByteLength > int.MaxValue)
            throw new NotSupportedException($"tensor '{tensor.Name}' in '{Path}' is {tensor.ByteLength} bytes; tensors over 2 GiB cannot be read as one span.");
        return new ReadOnlySpan<byte>(_data + tensor.DataOffset, (int)tensor.ByteLength);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _file.Dispose();
    }

    public override string ToString() => $"{Path} (GGUF v{Version}, {StoredTensors.Count} tensors)";

    /// <summary>Reads the header sequentially, checking every length against what is left of the file before allocating.</summary>
    private sealed class HeaderReader(string path, Stream stream, long fileLength)
    {
        private readonly byte[] _scratch = new byte[8];

        public long Position { get; private set; }

        private long Remaining => fileLength - Position;

        public void RequireCount(ulong count, int minimumBytesEach, string what)
        {
            if (count > (ulong)Math.Max(0, Remaining) / (ulong)minimumBytesEach)
                throw new GgufException(path, $"the header says {count} {what}, more than the {Remaining} bytes left in the file can hold.",
                    "The file is truncated or corrupt; fetch it again.");
        }

        private ReadOnlySpan<byte> Take(int count, string what)
        {
            if (Remaining < count)
                throw new GgufException(path, $"the file is truncated: it ends at byte {fileLength} while reading {what}.",
                    "The download or copy was cut off; fetch the file again.");
            stream.ReadExactly(_scratch, 0, count);
            Position += count;
            return _scratch.AsSpan(0, count);
        }

        public uint UInt32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));

        public ulong UInt64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

        public string String(string what)
        {
            ulong length = UInt64($"the length of {what}");
            if (length > (ulong)Math.Max(0, Remaining))
                throw new GgufException(path, $"{what} claims to be {length} bytes long, but only {Remaining} bytes are left in the file.",
                    "The file is truncated or corrupt; fetch it again.");
            var bytes = new byte[length];
            stream.ReadExactly(bytes);
            Position += (long)length;
            try
            {
                return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw new GgufException(path, $"{what} at byte {Position - (long)length} is not valid UTF-8.", "The file is corrupt.");
            }
        }

        public object Value(GgufValueType type, string key, int arrayDepth = 0) => type switch
        {
            GgufValueType.UInt8 => Take(1, key)[0],
            GgufValueType.Int8 => (sbyte)Take(1, key)[0],
            GgufValueType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, key)),
            GgufValueType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(Take(2, key)),
            GgufValueType.UInt32 => UInt32(key),
            GgufValueType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(Take(4, key)),
            GgufValueType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(Take(4, key)),
            GgufValueType.Bool => Take(1, key)[0] switch
            {
                0 => false,
                1 => true,
                var other => throw new GgufException(path, $"metadata '{key}' is a bool stored as {other}; GGUF bools are 0 or 1.", "The file is corrupt."),
            },
            GgufValueType.String => String($"the value of metadata '{key}'"),
            GgufValueType.UInt64 => UInt64(key),
            GgufValueType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(Take(8, key)),
            GgufValueType.Float64 => BinaryPrimitives.ReadDoubleLittleEndian(Take(8, key)),
            GgufValueType.Array => ArrayValue(key, arrayDepth + 1),
            _ => throw new GgufException(path, $"metadata '{key}' has value type {(uint)type}, which GGUF does not define.", "The file is corrupt or from a newer GGUF version."),
        };

        private Array ArrayValue(string key, int depth)
        {
            if (depth > MaxArrayNesting)
                throw new GgufException(path, $"metadata '{key}' nests arrays more than {MaxArrayNesting} deep.", "The file is corrupt.");
            var elementType = (GgufValueType)UInt32($"the element type of metadata '{key}'");
            ulong count = UInt64($"the length of metadata array '{key}'");
            int smallest = elementType switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
                GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
                GgufValueType.Array => 12,
                _ => throw new GgufException(path, $"metadata array '{key}' has element type {(uint)elementType}, which GGUF does not define.", "The file is corrupt."),
            };
            if (count > (ulong)Math.Max(0, Remaining) / (ulong)smallest)
                throw new GgufException(path, $"metadata array '{key}' claims {count} elements, more than the {Remaining} bytes left in the file can hold.",
                    "The file is truncated or corrupt; fetch it again.");
            var items = new object[count];
            for (ulong i = 0; i < count; i++) items[i] = Value(elementType, key, depth);
            if (elementType == GgufValueType.Array) return items;
            Type clrType = items.Length > 0 ? items[0].GetType() : ElementClrType(elementType);
            var typed = System.Array.CreateInstance(clrType, items.Length);
            System.Array.Copy(items, typed, items.Length);
            return typed;
        }

        private static Type ElementClrType(GgufValueType type) => type switch
        {
            GgufValueType.UInt8 => typeof(byte), GgufValueType.Int8 => typeof(sbyte), GgufValueType.UInt16 => typeof(ushort),
            GgufValueType.Int16 => typeof(short), GgufValueType.UInt32 => typeof(uint), GgufValueType.Int32 => typeof(int),
            GgufValueType.Float32 => typeof(float), GgufValueType.Bool => typeof(bool), GgufValueType.String => typeof(string),
            GgufValueType.UInt64 => typeof(ulong), GgufValueType.Int64 => typeof(long), _ => typeof(double),
        };
    }
}
