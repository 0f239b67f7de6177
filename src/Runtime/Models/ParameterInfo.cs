using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// One weight a compiled model needs: its checkpoint name, its shape, and the dtype the real checkpoint stores it
/// in. Loading accepts any float dtype; <see cref="DType"/> is what a user should expect to find, not a demand.
/// </summary>
public sealed record ParameterInfo(string Name, int[] Shape, DType DType)
{
    // A record compares arrays by reference; two tables describing the same model must compare equal.
    public bool Equals(ParameterInfo? other) =>
        other is not null && Name == other.Name && DType == other.DType && Shape.AsSpan().SequenceEqual(other.Shape);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Name);
        hash.Add(DType);
        foreach (int dim in Shape) hash.Add(dim);
        return hash.ToHashCode();
    }

    public override string ToString() => $"{Name}: {DType}{HostTensor.FormatShape(Shape)}";
}
