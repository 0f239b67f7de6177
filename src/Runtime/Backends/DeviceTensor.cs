using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// A tensor in a backend's memory. Activations are float32 (bf16 where <see cref="IBackend.AllocateActivation"/> stores
/// them so); weights keep the dtype the backend stores them in
/// (the CUDA backend keeps bf16/f16 weights as 16-bit words, the CPU backend widens them to float32, and holds a weight
/// uploaded quantized in its blocks: DType F32, fewer <see cref="StoredBytes"/>).
/// Disposing returns the memory to the backend.
/// </summary>
public abstract class DeviceTensor : IDisposable
{
    protected DeviceTensor(int[] shape, DType dtype)
    {
        Shape = shape;
        DType = dtype;
        Length = HostTensor.ElementCount(shape);
    }

    public int[] Shape { get; }
    public DType DType { get; }
    public long Length { get; }

    /// <summary>Bytes the backend holds for the tensor's elements: fewer than Length·DType's size for a weight kept quantized.</summary>
    public virtual long StoredBytes => Length * DType.SizeInBytes();

    /// <summary>The whole tensor as a view, folded as [leading dims..., rows, cols].</summary>
    public View AsView() => View.Of(this);

    public abstract void Dispose();

    public override string ToString() => $"{DType}{HostTensor.FormatShape(Shape)}";
}
