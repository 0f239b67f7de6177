using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Tensors;

/// <summary>
/// bfloat16 ↔ float32 over little-endian byte buffers (the layout of safetensors files and device uploads).
/// bfloat16 is the upper half of a float32, so widening is exact and a shift; narrowing rounds to nearest even,
/// as PyTorch's <c>tensor.to(torch.bfloat16)</c> does, so files we write match files PyTorch writes.
/// </summary>
public static class BFloat16
{
    private const uint QuietNaNBit = 0x0040;

    public static float ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    public static ushort FromSingle(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
            return (ushort)((bits >> 16) | QuietNaNBit); // truncating could turn a NaN with low payload bits into ±inf
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>Widens <paramref name="source"/> (2 bytes per element) into <paramref name="destination"/>.</summary>
    public static void ToSingle(ReadOnlySpan<byte> source, Span<float> destination)
    {
        int count = CheckLengths(source.Length, destination.Length);
        int done = 0;
        if (BitConverter.IsLittleEndian && Vector.IsHardwareAccelerated)
        {
            ReadOnlySpan<ushort> halves = MemoryMarshal.Cast<byte, ushort>(source[..(count * 2)]);
            Span<uint> words = MemoryMarshal.Cast<float, uint>(destination);
            int step = Vector<ushort>.Count;
            for (; done <= count - step; done += step)
            {
                Vector.Widen(new Vector<ushort>(halves.Slice(done, step)), out Vector<uint> low, out Vector<uint> high);
                (low << 16).CopyTo(words.Slice(done, Vector<uint>.Count));
                (high << 16).CopyTo(words.Slice(done + Vector<uint>.Count, Vector<uint>.Count));
            }
        }
        for (; done < count; done++)
            destination[done] = ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(done * 2, 2)));
    }

    /// <summary>Narrows <paramref name="source"/> into <paramref name="destination"/> (2 bytes per element), round to nearest even.</summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<byte> destination)
    {
        int count = CheckLengths(destination.Length, source.Length);
        int done = 0;
        if (BitConverter.IsLittleEndian && Vector.IsHardwareAccelerated)
        {
            ReadOnlySpan<uint> words = MemoryMarshal.Cast<float, uint>(source);
            Span<ushort> halves = MemoryMarshal.Cast<byte, ushort>(destination[..(count * 2)]);
            int step = Vector<ushort>.Count;
            int half = Vector<uint>.Count;
            for (; done <= count - step; done += step)
            {
                Vector<ushort> narrowed = Vector.Narrow(
                    Round(new Vector<uint>(words.Slice(done, half))),
                    Round(new Vector<uint>(words.Slice(done + half, half))));
                narrowed.CopyTo(halves.Slice(done, step));
            }
        }
        for (; done < count; done++)
            BinaryPrimitives.WriteUInt16LittleEndian(destination.Slice(done * 2, 2), FromSingle(source[done]));
    }

    // The vector form of FromSingle(float): the result sits in the low 16 bits of each lane.
    private static Vector<uint> Round(Vector<uint> bits)
    {
        Vector<uint> upper = bits >> 16;
        Vector<uint> rounded = (bits + new Vector<uint>(0x7FFF) + (upper & Vector<uint>.One)) >> 16;
        Vector<uint> isNaN = Vector.GreaterThan(bits & new Vector<uint>(0x7FFF_FFFF), new Vector<uint>(0x7F80_0000));
        return Vector.ConditionalSelect(isNaN, upper | new Vector<uint>(QuietNaNBit), rounded);
    }

    internal static int CheckLengths(int byteLength, int floatLength)
    {
        if (byteLength % 2 != 0)
            throw new ArgumentException($"a buffer of 16-bit elements has an odd byte length {byteLength}");
        if (byteLength / 2 != floatLength)
            throw new ArgumentException($"{byteLength / 2} 16-bit elements do not fit {floatLength} float32 elements");
        return floatLength;
    }
}

/// <summary>
/// IEEE half (float16) ↔ float32 over little-endian byte buffers, through <see cref="System.Half"/>
/// (exact widening, round-to-nearest-even narrowing).
/// </summary>
public static class Float16
{
    public static void ToSingle(ReadOnlySpan<byte> source, Span<float> destination)
    {
        int count = BFloat16.CheckLengths(source.Length, destination.Length);
        for (int i = 0; i < count; i++)
            destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source.Slice(i * 2, 2));
    }

    public static void FromSingle(ReadOnlySpan<float> source, Span<byte> destination)
    {
        int count = BFloat16.CheckLengths(destination.Length, source.Length);
        for (int i = 0; i < count; i++)
            BinaryPrimitives.WriteHalfLittleEndian(destination.Slice(i * 2, 2), (Half)source[i]);
    }
}
