using System.Buffers.Binary;
using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// Stored bytes → float32, exactly the value each format defines (the block layouts of ggml-common.h and the
/// arithmetic of ggml's dequantize_row_*: float32 products in the same order, no fused multiply-add), so a weight
/// read here is bit for bit what ggml reads.
/// </summary>
public static class TensorDecoder
{
    /// <summary>Decodes whole blocks: <paramref name="destination"/>'s length must be a multiple of the block size and match <paramref name="source"/>.</summary>
    public static void Decode(TensorFormat format, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int blockElements = format.BlockElements();
        int blockBytes = format.BlockBytes();
        if (destination.Length % blockElements != 0 || (long)destination.Length / blockElements * blockBytes != source.Length)
            throw new ArgumentException(
                $"{source.Length} bytes of {format} do not decode to {destination.Length} values ({blockElements} values per {blockBytes}-byte block)");
        switch (format)
        {
            case TensorFormat.F32: source.CopyTo(MemoryMarshal.AsBytes(destination)); return;
            case TensorFormat.F16: Float16.ToSingle(source, destination); return;
            case TensorFormat.BF16: BFloat16.ToSingle(source, destination); return;
            case TensorFormat.F64:
                for (int i = 0; i < destination.Length; i++)
                    destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source.Slice(i * 8, 8));
                return;
            case TensorFormat.F8_E4M3: Float8.E4M3ToSingle(source, destination); return;
            case TensorFormat.F8_E5M2: Float8.E5M2ToSingle(source, destination); return;
        }
        BlockDecoder decode = format switch
        {
            TensorFormat.Q8_0 => DecodeQ8_0,
            TensorFormat.Q4_0 => DecodeQ4_0,
            TensorFormat.Q4_1 => DecodeQ4_1,
            TensorFormat.Q5_0 => DecodeQ5_0,
            TensorFormat.Q5_1 => DecodeQ5_1,
            TensorFormat.Q2_K => DecodeQ2_K,
            TensorFormat.Q3_K => DecodeQ3_K,
            TensorFormat.Q4_K => DecodeQ4_K,
            TensorFormat.Q5_K => DecodeQ5_K,
            TensorFormat.Q6_K => DecodeQ6_K,
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
        };
        int blocks = destination.Length / blockElements;
        for (int b = 0; b < blocks; b++)
            decode(source.Slice(b * blockBytes, blockBytes), destination.Slice(b * blockElements, blockElements));
    }

    /// <summary>
    /// <see cref="Decode(TensorFormat, ReadOnlySpan{byte}, Span{float})"/>, each value then times <paramref name="scale"/>
    /// in float32 (one rounding: the value ComfyUI computes for a scaled fp8 weight, whatever the scale).
    /// </summary>
    public static void Decode(TensorFormat format, ReadOnlySpan<byte> source, Span<float> destination, float scale)
    {
        Decode(format, source, destination);
        if (scale == 1f) return;
        var vectors = MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(destination);
        for (int i = 0; i < vectors.Length; i++) vectors[i] *= scale;
        for (int i = vectors.Length * System.Numerics.Vector<float>.Count; i < destination.Length; i++) destination[i] *= scale;
    }

    /// <summary>A whole tensor as float32.</summary>
    public static float[] Decode(TensorFormat format, ReadOnlySpan<byte> source, long elementCount)
    {
        var values = new float[checked((int)elementCount)];
        Decode(format, source, values);
        return values;
    }

    private delegate void BlockDecoder(ReadOnlySpan<byte> block, Span<float> values);

    internal static float Half(ReadOnlySpan<byte> bytes, int offset) => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes.Slice(offset, 2));

    private static void DecodeQ8_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        for (int j = 0; j < 32; j++) y[j] = (sbyte)block[2 + j] * d;
    }

    // The 4-bit formats keep element j in the low nibble of byte j and element j + 16 in its high nibble.
    private static void DecodeQ4_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        ReadOnlySpan<byte> qs = block.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    private static void DecodeQ4_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), m = Half(block, 2);
        ReadOnlySpan<byte> qs = block.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (qs[j] & 0x0F) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        }
    }

    // The 5-bit formats add a fifth bit per element from a 32-bit mask: bit j for element j.
    private static void DecodeQ5_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block.Slice(2, 4));
        ReadOnlySpan<byte> qs = block.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((int)((qs[j] & 0x0Fu) | (((qh >> j) & 1) << 4)) - 16) * d;
            y[j + 16] = ((int)((uint)(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16) * d;
        }
    }

    private static void DecodeQ5_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), m = Half(block, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block.Slice(4, 4));
        ReadOnlySpan<byte> qs = block.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (int)((qs[j] & 0x0Fu) | (((qh >> j) & 1) << 4)) * d + m;
            y[j + 16] = (int)((uint)(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) * d + m;
        }
    }

    // K-quants: 256 values in groups; each 128-value half reads 32 bytes of packed bits, one 2-bit (or 4-bit) field per pass.
    private static void DecodeQ2_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        ReadOnlySpan<byte> scales = block[..16], qs = block.Slice(16, 64);
        float d = Half(block, 80), dmin = Half(block, 82);
        int group = 0;
        for (int half = 0; half < 2; half++)
        {
            ReadOnlySpan<byte> q = qs.Slice(half * 32, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                for (int part = 0; part < 2; part++, group++)
                {
                    float dl = d * (scales[group] & 0xF), ml = dmin * (scales[group] >> 4);
                    int at = half * 128 + shift / 2 * 32 + part * 16;
                    for (int l = 0; l < 16; l++) y[at + l] = dl * ((q[part * 16 + l] >> shift) & 3) - ml;
                }
            }
        }
    }

    private static void DecodeQ3_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        ReadOnlySpan<byte> hmask = block[..32], qs = block.Slice(32, 64), packedScales = block.Slice(96, 12);
        float d = Half(block, 108);
        Span<int> scales = stackalloc int[16];
        for (int s = 0; s < 16; s++)
        {
            int low = s < 8 ? packedScales[s] & 0xF : packedScales[s - 8] >> 4;
            int high = (packedScales[8 + s % 4] >> (2 * (s / 4))) & 3;
            scales[s] = (low | (high << 4)) - 32;
        }
        int group = 0, bit = 0;
        for (int half = 0; half < 2; half++)
        {
            ReadOnlySpan<byte> q = qs.Slice(half * 32, 32);
            for (int shift = 0; shift < 8; shift += 2, bit++)
            {
                for (int part = 0; part < 2; part++, group++)
                {
                    float dl = d * scales[group];
                    int at = half * 128 + shift / 2 * 32 + part * 16;
                    for (int l = 0; l < 16; l++)
                    {
                        int i = part * 16 + l;
                        int value = ((q[i] >> shift) & 3) - ((hmask[i] >> bit & 1) != 0 ? 0 : 4);
                        y[at + l] = dl * value;
                    }
                }
            }
        }
    }

    /// <summary>The 6-bit scale and min of group <paramref name="j"/> (of 8) in the 12 packed bytes of Q4_K and Q5_K.</summary>
    internal static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    private static void DecodeQ4_K(ReadOnlySpan<byte> block, Span<float> y) =>
        DecodeScaleMinK(block.Slice(4, 12), [], block.Slice(16, 128), Half(block, 0), Half(block, 2), y);

    private static void DecodeQ5_K(ReadOnlySpan<byte> block, Span<float> y) =>
        DecodeScaleMinK(block.Slice(4, 12), block.Slice(16, 32), block.Slice(48, 128), Half(block, 0), Half(block, 2), y);

    /// <summary>
    /// Q4_K and Q5_K: 8 groups of 32 with 6-bit scales and mins; each 64 values read 32 bytes, low nibbles then high
    /// nibbles, and Q5_K adds a fifth bit per value from <paramref name="qh"/> (bit 2·chunk for low, 2·chunk+1 for high).
    /// </summary>
    private static void DecodeScaleMinK(ReadOnlySpan<byte> scales, ReadOnlySpan<byte> qh, ReadOnlySpan<byte> qs, float d, float dmin, Span<float> y)
    {
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (sc1, m1) = ScaleMinK4(2 * chunk, scales);
            var (sc2, m2) = ScaleMinK4(2 * chunk + 1, scales);
            float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
            ReadOnlySpan<byte> q = qs.Slice(chunk * 32, 32);
            for (int l = 0; l < 32; l++)
            {
                int high1 = qh.IsEmpty ? 0 : (qh[l] >> (2 * chunk)) & 1, high2 = qh.IsEmpty ? 0 : (qh[l] >> (2 * chunk + 1)) & 1;
                y[chunk * 64 + l] = d1 * ((q[l] & 0xF) + 16 * high1) - min1;
                y[chunk * 64 + 32 + l] = d2 * ((q[l] >> 4) + 16 * high2) - min2;
            }
        }
    }

    private static void DecodeQ6_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        ReadOnlySpan<byte> ql = block[..128], qh = block.Slice(128, 64);
        ReadOnlySpan<sbyte> sc = MemoryMarshal.Cast<byte, sbyte>(block.Slice(192, 16));
        float d = Half(block, 208);
        for (int half = 0; half < 2; half++)
        {
            for (int l = 0; l < 32; l++)
            {
                int low = half * 64 + l, high = half * 32 + l, s = half * 8 + l / 16, at = half * 128 + l;
                y[at] = d * sc[s] * (((ql[low] & 0xF) | (((qh[high] >> 0) & 3) << 4)) - 32);
                y[at + 32] = d * sc[s + 2] * (((ql[low + 32] & 0xF) | (((qh[high] >> 2) & 3) << 4)) - 32);
                y[at + 64] = d * sc[s + 4] * (((ql[low] >> 4) | (((qh[high] >> 4) & 3) << 4)) - 32);
                y[at + 96] = d * sc[s + 6] * (((ql[low + 32] >> 4) | (((qh[high] >> 6) & 3) << 4)) - 32);
            }
        }
    }
}
