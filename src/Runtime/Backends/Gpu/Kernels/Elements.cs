using ILGPU;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// The elements of an activation tensor as kernels read and write them, whatever its storage: float32, or bf16 words
/// (<see cref="GpuPrecision.BFloat16"/>'s activations). Loads widen exactly; stores round to nearest even. Every
/// kernel is written once against this accessor: the storage test is uniform across a launch, a cheap branch next
/// to the memory traffic it halves. Arithmetic stays float32 (and reductions accumulate in float32) either way.
/// </summary>
public readonly struct Elements
{
    public readonly ArrayView<float> Floats;
    public readonly ArrayView<ushort> Words;
    /// <summary>1 when the elements are bf16 words (int, not bool: kernel parameters are blittable).</summary>
    public readonly int IsBFloat16;

    private Elements(ArrayView<float> floats, ArrayView<ushort> words, int isBFloat16)
    {
        Floats = floats;
        Words = words;
        IsBFloat16 = isBFloat16;
    }

    public static Elements Float32(ArrayView<float> floats) => new(floats, default, 0);

    public static Elements BFloat16(ArrayView<ushort> words) => new(default, words, 1);

    /// <summary>Float32 storage: host code that only ever has float32 buffers (scratch) passes them as is.</summary>
    public static implicit operator Elements(ArrayView<float> floats) => Float32(floats);

    public float this[long index]
    {
        get => IsBFloat16 != 0 ? HalfWords.BFloat16ToFloat(Words[index]) : Floats[index];
        set
        {
            if (IsBFloat16 != 0)
                Words[index] = HalfWords.FloatToBFloat16(value);
            else
                Floats[index] = value;
        }
    }
}
