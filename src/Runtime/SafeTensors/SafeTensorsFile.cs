using System.Buffers.Binary;
using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>
/// A safetensors file (8-byte little-endian header length, JSON header, tensor data), memory-mapped read-only so
/// a 24 GB checkpoint costs no copy until a tensor is read. <see cref="Open"/> validates the whole header; after it
/// returns, every entry's bytes lie inside the file and no two tensors share bytes.
/// Spans and memory handed out stay valid until the file is disposed.
/// </summary>
public sealed unsafe class SafeTensorsFile : IWeightFile
{
    private readonly MappedFile _file;
    private readonly byte* _data;
    private readonly Dictionary<string, TensorEntry> _tensorsByName;
    private readonly Dictionary<string, OtherTensorEntry> _othersByName;
    private readonly Dictionary<string, StoredTensor> _storedByName;
    private bool _disposed;

    private SafeTensorsFile(
        string path, SafeTensorsHeader header, MappedFile file, long dataStart)
    {
        Path = path;
        Metadata = header.Metadata;
        Tensors = header.Tensors;
        OtherTensors = header.OtherTensors;
        _tensorsByName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _othersByName = header.OtherTensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _file = file;
        _data = file.Start + dataStart;
        var stored = header.Tensors.Select(t => new StoredTensor(t.Name, t.DType.SafeTensorsName(), t.DType.ToFormat(), t.Shape, t.DataOffset, t.ByteLength))
            .Concat(header.OtherTensors.Select(t => new StoredTensor(t.Name, t.DTypeName, Float8FormatOf(t.DTypeName), t.Shape, t.DataOffset, t.ByteLength)))
            .ToList();
        StoredTensors = ScaledFp8.Attach(path, stored, t => new ReadOnlySpan<byte>(_data + t.DataOffset, checked((int)t.ByteLength)));
        _storedByName = StoredTensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path { get; }

    /// <summary>The header's <c>__metadata__</c> (string → string); empty when the file has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The floating-point tensors, in header order.</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }

    /// <summary>Tensors of valid safetensors dtypes that are not floating point (see <see cref="OtherTensorEntry"/>).</summary>
    public IReadOnlyList<OtherTensorEntry> OtherTensors { get; }

    /// <summary>Every tensor, floating point first, with the fp8 ones decodable (<see cref="WeightFile.ReadFloat32"/>).</summary>
    public IReadOnlyList<StoredTensor> StoredTensors { get; }

    public static SafeTensorsFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is big-endian.");
        path = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(path))
            throw new SafeTensorsException(path, "it is a folder, not a file.", "Give the .safetensors file inside it.");

        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8)
                throw new SafeTensorsException(path,
                    $"the file is {fileLength} bytes long, shorter than the 8-byte header length that starts every safetensors file.",
                    "It is not a safetensors file, or it was cut off; fetch it again.");

            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > SafeTensorsHeader.MaxHeaderLength)
                throw new SafeTensorsException(path,
                    $"the header length field says {headerLength} bytes, more than the {SafeTensorsHeader.MaxHeaderLength} any real header needs.",
                    "The file is not a safetensors file (check that it is not a .ckpt, .gguf or an HTML error page) or it is corrupt.");
            if ((long)headerLength > fileLength - 8)
                throw new SafeTensorsException(path,
                    $"the header length field says {headerLength} bytes but only {fileLength - 8} follow it.",
                    "The file is truncated or not a safetensors file; fetch it again.");

            var json = new byte[headerLength];
            stream.ReadExactly(json);
            long dataStart = 8 + (long)headerLength;
            long dataLength = fileLength - dataStart;
            SafeTensorsHeader header = SafeTensorsHeader.Parse(path, json, dataLength);

            MappedFile mapped = MappedFile.Map(stream);
            try
            {
                return new SafeTensorsFile(path, header, mapped, dataStart);
            }
            catch
            {
                mapped.Dispose(); // a scaled fp8 file's bad scale is found here, after mapping
                throw;
            }
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public bool TryGetTensor(string name, out TensorEntry entry) => _tensorsByName.TryGetValue(name, out entry!);

    /// <exception cref="KeyNotFoundException">No tensor has that name.</exception>
    /// <exception cref="SafeTensorsException">The tensor exists but holds integers, bools or fp8.</exception>
    public TensorEntry GetTensor(string name)
    {
        if (_tensorsByName.TryGetValue(name, out TensorEntry? entry))
            return entry;
        if (_othersByName.TryGetValue(name, out OtherTensorEntry? other))
            throw new SafeTensorsException(Path,
                $"tensor '{name}' holds {other.DTypeName} values, not floating point (F32, F16, BF16, F64).");
        throw new KeyNotFoundException($"Safetensors file '{Path}' has no tensor '{name}' ({Tensors.Count + OtherTensors.Count} tensors in the file).");
    }

    /// <summary>The tensor's raw little-endian bytes, straight from the mapping (no copy).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorEntry entry) => new(DataPointer(entry), (int)entry.ByteLength);

    /// <summary>The tensor's raw bytes as memory (for writers that copy tensors between files); valid until disposal.</summary>
    public ReadOnlyMemory<byte> GetMemory(TensorEntry entry) =>
        new MappedMemory(this, DataPointer(entry), (int)entry.ByteLength).Memory;

    public ReadOnlySpan<byte> GetStoredBytes(StoredTensor tensor) =>
        new(Locate(tensor, _storedByName.GetValueOrDefault(tensor.Name), tensor.Name, tensor.DataOffset, tensor.ByteLength), (int)tensor.ByteLength);

    /// <summary>The tensor widened to float32: exact for F16, BF16 and fp8 (a scaled fp8 weight times its scale); F64 rounds to nearest.</summary>
    public HostTensor ReadFloat32(string name)
    {
        if (_storedByName.TryGetValue(name, out StoredTensor? stored) && (stored.Format is TensorFormat.F8_E4M3 or TensorFormat.F8_E5M2 || stored.Scale != 1f))
            return this.ReadFloat32(stored);
        TensorEntry entry = GetTensor(name);
        ReadOnlySpan<byte> bytes = GetBytes(entry);
        var values = new float[entry.ElementCount];
        switch (entry.DType)
        {
            case DType.F32:
                bytes.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
                break;
            case DType.BF16:
                BFloat16.ToSingle(bytes, values);
                break;
            case DType.F16:
                Float16.ToSingle(bytes, values);
                break;
            case DType.F64:
                ReadOnlySpan<double> doubles = MemoryMarshal.Cast<byte, double>(bytes);
                for (int i = 0; i < values.Length; i++)
                    values[i] = (float)doubles[i];
                break;
            default:
                throw new InvalidOperationException($"no float32 conversion for {entry.DType}");
        }
        return new HostTensor((int[])entry.Shape.Clone(), values);
    }

    /// <summary>An I64 tensor (token ids in test data) and its shape.</summary>
    public long[] ReadInt64(string name, out int[] shape)
    {
        if (!_othersByName.TryGetValue(name, out OtherTensorEntry? entry) || entry.DTypeName != "I64")
        {
            string found = _tensorsByName.TryGetValue(name, out TensorEntry? floatEntry) ? $"it is {floatEntry.DType}"
                : entry is not null ? $"it is {entry.DTypeName}" : "there is no such tensor";
            throw new SafeTensorsException(Path, $"tensor '{name}' was read as I64 but {found}.");
        }
        var span = new ReadOnlySpan<byte>(DataPointer(entry), (int)entry.ByteLength);
        shape = (int[])entry.Shape.Clone();
        return MemoryMarshal.Cast<byte, long>(span).ToArray();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _file.Dispose();
    }

    public override string ToString() => $"{Path} ({Tensors.Count + OtherTensors.Count} tensors)";

    private static TensorFormat? Float8FormatOf(string dtypeName) => dtypeName switch
    {
        "F8_E4M3" => TensorFormat.F8_E4M3,
        "F8_E5M2" => TensorFormat.F8_E5M2,
        _ => null,
    };

    private byte* DataPointer(TensorEntry entry) =>
        Locate(entry, _tensorsByName.GetValueOrDefault(entry.Name), entry.Name, entry.DataOffset, entry.ByteLength);

    private byte* DataPointer(OtherTensorEntry entry) =>
        Locate(entry, _othersByName.GetValueOrDefault(entry.Name), entry.Name, entry.DataOffset, entry.ByteLength);

    // Only entries this file handed out were checked against its size; any other entry could point past the mapping.
    private byte* Locate(object entry, object? registered, string name, long offset, long byteLength)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!ReferenceEquals(entry, registered))
            throw new ArgumentException($"tensor entry '{name}' does not come from '{Path}'; look it up in this file.", nameof(entry));
        if (byteLength > int.MaxValue)
            throw new NotSupportedException(
                $"tensor '{name}' in '{Path}' is {byteLength} bytes; tensors over 2 GiB cannot be read as one span.");
        return _data + offset;
    }
}
