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
        long expected = Format.ByteCount(Shape) ?? throw new ArgumentException(
            $"tensor '{Name}' {HostTensor.FormatShape(Shape)} cannot be stored as {Format}: its innermost dimension is not whole {Format.BlockElements()}-element blocks");
        if (Data.Length != expected)
            throw new ArgumentException($"tensor '{Name}' is {Format}{HostTensor.FormatShape(Shape)}, {expected} bytes, but {Data.Length} bytes were given");
        return expected;
    }
}
