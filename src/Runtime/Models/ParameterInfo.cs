using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// One weight a compiled model needs: its checkpoint name, its shape, and the dtype the real checkpoint stores it
/// in. Loading accepts any float dtype; <see cref="DType"/> is what a user should expect to find, not a demand.
/// <paramref name="Unquantized"/>: the schema's "unquantized" names it, so quantizing the model at load leaves it in its
/// float dtype (the small input and output layers published quantized files keep unquantized).
/// </summary>
public sealed record ParameterInfo(string Name, int[] Shape, DType DType, bool Unquantized = false)
{
    // A record compares arrays by reference; two tables describing the same model must compare equal.
    public bool Equals(ParameterInfo? other) =>
        other is not null && Name == other.Name && DType == other.DType && Unquantized == other.Unquantized && Shape.AsSpan().SequenceEqual(other.Shape);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Name);
        hash.Add(DType);
        hash.Add(Unquantized);
        foreach (int dim in Shape) hash.Add(dim);
        return hash.ToHashCode();
    }

    public override string ToString() => $"{Name}: {DType}{HostTensor.FormatShape(Shape)}";
}
