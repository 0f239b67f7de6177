using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// One weight a compiled model needs: its checkpoint name, its shape, and the dtype the real checkpoint stores it
/// in. Loading accepts any float dtype; <see cref="DType"/> is what a user should expect to find, not a demand.
/// <paramref name="Unquantized"/>: the schema's "unquantized" names it, so quantizing the model at load leaves it in its
/// float dtype (the small input and output layers published quantized files keep unquantized).
/// <paramref name="ReadOutsideProducts"/>: an op other than a matrix product reads it (an embedding table, a convolution
/// kernel), so it is held as floats whatever the precision and the file, since quantized blocks only serve products.
/// </summary>
public sealed record ParameterInfo(string Name, int[] Shape, DType DType, bool Unquantized = false, bool ReadOutsideProducts = false)
{
    // A record compares arrays by reference; two tables describing the same model must compare equal.
    public bool Equals(ParameterInfo? other) =>
        other is not null && Name == other.Name && DType == other.DType && Unquantized == other.Unquantized &&
        ReadOutsideProducts == other.ReadOutsideProducts && Shape.AsSpan().SequenceEqual(other.Shape);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Name);
        hash.Add(DType);
        hash.Add(Unquantized);
        hash.Add(ReadOutsideProducts);
        foreach (int dim in Shape) hash.Add(dim);
        return hash.ToHashCode();
    }

    public override string ToString() => $"{Name}: {DType}{HostTensor.FormatShape(Shape)}";
}
