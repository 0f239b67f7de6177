namespace InFluxEdit.Runtime.Tensors;

/// <summary>A dense, row-major float32 tensor in host memory: model inputs, outputs and test data.</summary>
public sealed class HostTensor
{
    public HostTensor(int[] shape, float[] data)
    {
        long count = ElementCount(shape);
        if (count != data.LongLength)
            throw new ArgumentException($"shape [{string.Join(", ", shape)}] holds {count} elements but {data.LongLength} were given");
        Shape = shape;
        Data = data;
    }

    public HostTensor(params int[] shape) : this(shape, new float[ElementCount(shape)]) { }

    public int[] Shape { get; }
    public float[] Data { get; }
    public long Length => Data.LongLength;
    public int Rank => Shape.Length;

    public static long ElementCount(IReadOnlyList<int> shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension {d}");
            n *= d;
        }
        return n;
    }

    public static string FormatShape(IReadOnlyList<int> shape) => "[" + string.Join(", ", shape) + "]";

    public override string ToString() => $"HostTensor{FormatShape(Shape)}";
}
