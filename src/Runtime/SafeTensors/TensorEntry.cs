using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>A floating-point tensor in a safetensors file. <see cref="DataOffset"/> counts from the start of the data section.</summary>
public sealed record TensorEntry(string Name, DType DType, int[] Shape, long DataOffset, long ByteLength)
{
    public long ElementCount => HostTensor.ElementCount(Shape);

    public override string ToString() => $"{Name}: {DType}{HostTensor.FormatShape(Shape)}";
}

/// <summary>
/// A tensor whose dtype is valid safetensors but no <see cref="DType"/>: integer ids, bool masks, fp8 weights (which
/// load decoded, through <see cref="SafeTensorsFile.StoredTensors"/>).
/// Test data files hold token ids this way.
/// </summary>
public sealed record OtherTensorEntry(string Name, string DTypeName, int[] Shape, long DataOffset, long ByteLength)
{
    public override string ToString() => $"{Name}: {DTypeName}{HostTensor.FormatShape(Shape)}";
}
