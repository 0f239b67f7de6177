using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// Widens checkpoint weights to the float32 every CPU kernel reads. Kept private to the CPU backend; a shared
/// converter may replace it.
/// </summary>
internal static class CpuWeightConversion
{
    public static void ToFloat32(ReadOnlySpan<byte> raw, DType dtype, Span<float> destination)
    {
        long expectedBytes = (long)destination.Length * dtype.SizeInBytes();
        if (raw.Length != expectedBytes)
            throw new ArgumentException($"{dtype} weight of {destination.Length} elements needs {expectedBytes} bytes, got {raw.Length}");
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("weights are little-endian; a big-endian host is not supported");

        switch (dtype)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(raw).CopyTo(destination);
                break;
            case DType.BF16:
                BFloat16ToFloat32(MemoryMarshal.Cast<byte, ushort>(raw), destination);
                break;
            case DType.F16:
                HalfToFloat32(MemoryMarshal.Cast<byte, Half>(raw), destination);
                break;
            case DType.F64:
                Float64ToFloat32(MemoryMarshal.Cast<byte, double>(raw), destination);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no conversion to float32");
        }
    }

    /// <summary>bf16 is the upper half of a float32, so widening is a 16-bit shift: exact, NaN and Inf included.</summary>
    public static void BFloat16ToFloat32(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref ushort src = ref MemoryMarshal.GetReference(source);
            Span<uint> bits = MemoryMarshal.Cast<float, uint>(destination);
            for (; i <= source.Length - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
            {
                Vector512<ushort> words = Vector512.LoadUnsafe(ref src, (nuint)i);
                (Vector512<uint> lower, Vector512<uint> upper) = Vector512.Widen(words);
                (lower << 16).CopyTo(bits.Slice(i));
                (upper << 16).CopyTo(bits.Slice(i + Vector512<uint>.Count));
            }
        }
        for (; i < source.Length; i++)
            destination[i] = BitConverter.Int32BitsToSingle(source[i] << 16);
    }

    private static void HalfToFloat32(ReadOnlySpan<Half> source, Span<float> destination)
    {
        for (int i = 0; i < source.Length; i++) destination[i] = (float)source[i];
    }

    private static void Float64ToFloat32(ReadOnlySpan<double> source, Span<float> destination)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref double src = ref MemoryMarshal.GetReference(source);
            for (; i <= source.Length - 2 * Vector512<double>.Count; i += 2 * Vector512<double>.Count)
            {
                Vector512<float> narrowed = Vector512.Narrow(
                    Vector512.LoadUnsafe(ref src, (nuint)i), Vector512.LoadUnsafe(ref src, (nuint)(i + Vector512<double>.Count)));
                narrowed.CopyTo(destination.Slice(i));
            }
        }
        for (; i < source.Length; i++) destination[i] = (float)source[i];
    }
}
