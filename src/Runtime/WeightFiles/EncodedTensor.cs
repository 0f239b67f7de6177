using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.WeightFiles;

/// <summary>A tensor's bytes in a stored format (row-major shape), ready for a writer to copy into a file.</summary>
public sealed record EncodedTensor(string Name, TensorFormat Format, int[] Shape, ReadOnlyMemory<byte> Data)
{
    /// <summary>Encodes float32 values (see <see cref="TensorEncoder"/>).</summary>
    public static EncodedTensor Encode(string name, HostTensor tensor, TensorFormat format) =>
        new(name, format, (int[])tensor.Shape.Clone(), TensorEncoder.Encode(format, tensor.Data));

    /// <summary>Checks that the data is the size its format and shape need.</summary>
    public long CheckedByteLength()
    {
        long expected = StreamedTensor.ByteLengthOf(Name, Format, Shape);
        if (Data.Length != expected)
            throw new ArgumentException($"tensor '{Name}' is {Format}{HostTensor.FormatShape(Shape)}, {expected} bytes, but {Data.Length} bytes were given");
        return expected;
    }

    /// <summary>The same tensor for a streaming writer (its bytes already in hand).</summary>
    public StreamedTensor Streamed()
    {
        CheckedByteLength();
        return new StreamedTensor(Name, Format, Shape, stream => stream.Write(Data.Span));
    }
}

/// <summary>
/// A tensor a writer stores without holding it beforehand: its name, format and shape fix its header entry and
/// offset; <see cref="WriteBytes"/> produces its bytes only when the writer reaches it, so a file of many tensors is
/// written holding about one at a time. A writer checks that exactly <see cref="ByteLength"/> bytes came out.
/// </summary>
public sealed record StreamedTensor(string Name, TensorFormat Format, int[] Shape, Action<Stream> WriteBytes)
{
    public long ByteLength => ByteLengthOf(Name, Format, Shape);

    internal static long ByteLengthOf(string name, TensorFormat format, int[] shape) => format.ByteCount(shape) ?? throw new ArgumentException(
        $"tensor '{name}' {HostTensor.FormatShape(shape)} cannot be stored as {format}: its innermost dimension is not whole {format.BlockElements()}-element blocks");

    /// <summary>Writes the bytes and checks their count against the header's.</summary>
    internal void WriteChecked(Stream stream) => WriteCounted(stream, Name, ByteLength, WriteBytes);

    /// <summary>Runs <paramref name="write"/> and checks it wrote the <paramref name="byteLength"/> bytes a header already promised.</summary>
    internal static void WriteCounted(Stream stream, string name, long byteLength, Action<Stream> write)
    {
        long before = stream.Position;
        write(stream);
        if (stream.Position - before != byteLength)
            throw new InvalidOperationException($"tensor '{name}' wrote {stream.Position - before} bytes, its header entry says {byteLength}");
    }
}
