using System.Buffers.Binary;
using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// float32 → stored bytes. The block quantizers follow ggml's deterministic reference quantizers
/// (quantize_row_*_ref: the same scale choice, the same rounding, float32 arithmetic in the same order), so a file we
/// write holds the bytes ggml's reference would write. Every format has one.
/// </summary>
public static class TensorEncoder
{
    // Below this a K-quant group counts as all zeros (ggml's GROUP_MAX_EPS).
    private const float GroupMaxEps = 1e-15f;

    public static byte[] Encode(TensorFormat format, ReadOnlySpan<float> values)
    {
        int blockElements = format.BlockElements();
        if (values.Length % blockElements != 0)
            throw new ArgumentException($"{values.Length} values are not whole {format} blocks of {blockElements}");
        var bytes = new byte[(long)values.Length / blockElements * format.BlockBytes()];
        Encode(format, values, bytes);
        return bytes;
    }

    public static void Encode(TensorFormat format, ReadOnlySpan<float> source, Span<byte> destination)
    {
        int blockElements = format.BlockElements();
        int blockBytes = format.BlockBytes();
        if (source.Length % blockElements != 0 || (long)source.Length / blockElements * blockBytes != destination.Length)
            throw new ArgumentException($"{source.Length} values do not encode to {destination.Length} bytes of {format}");
        switch (format)
        {
            case TensorFormat.F32: MemoryMarshal.AsBytes(source).CopyTo(destination); return;
            case TensorFormat.F16: Float16.FromSingle(source, destination); return;
            case TensorFormat.BF16: BFloat16.FromSingle(source, destination); return;
            case TensorFormat.F64:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(destination.Slice(i * 8, 8), source[i]);
                return;
            case TensorFormat.F8_E4M3:
                for (int i = 0; i < source.Length; i++) destination[i] = Float8.E4M3FromSingle(source[i]);
                return;
            case TensorFormat.F8_E5M2:
                for (int i = 0; i < source.Length; i++) destination[i] = Float8.E5M2FromSingle(source[i]);
                return;
        }
        BlockEncoder encode = format switch
        {
            TensorFormat.Q8_0 => EncodeQ8_0,
            TensorFormat.Q4_0 => (x, y) => EncodeSymmetric(x, y, bits: 4),
            TensorFormat.Q5_0 => (x, y) => EncodeSymmetric(x, y, bits: 5),
            TensorFormat.Q4_1 => (x, y) => EncodeWithMin(x, y, bits: 4),
            TensorFormat.Q5_1 => (x, y) => EncodeWithMin(x, y, bits: 5),
            TensorFormat.Q2_K => EncodeQ2_K,
            TensorFormat.Q3_K => EncodeQ3_K,
            TensorFormat.Q4_K => (x, y) => EncodeScaleMinK(x, y, bits: 4),
            TensorFormat.Q5_K => (x, y) => EncodeScaleMinK(x, y, bits: 5),
            TensorFormat.Q6_K => EncodeQ6_K,
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
        };
        destination.Clear();
        int blocks = source.Length / blockElements;
        if (blocks < ParallelBlocks)
        {
            for (int b = 0; b < blocks; b++)
                encode(source.Slice(b * blockElements, blockElements), destination.Slice(b * blockBytes, blockBytes));
            return;
        }
        // Blocks are independent, so the bytes do not depend on how they are shared out; a 12B model's weights take
        // minutes to quantize on one core.
        unsafe
        {
            fixed (float* sourcePointer = source)
            fixed (byte* destinationPointer = destination)
            {
                float* from = sourcePointer;
                byte* to = destinationPointer;
                int chunks = (blocks + ParallelBlocks - 1) / ParallelBlocks;
                Parallel.For(0, chunks, chunk =>
                {
                    int first = chunk * ParallelBlocks, last = Math.Min(blocks, first + ParallelBlocks);
                    for (int b = first; b < last; b++)
                        encode(new ReadOnlySpan<float>(from + (long)b * blockElements, blockElements), new Span<byte>(to + (long)b * blockBytes, blockBytes));
                });
            }
        }
    }

    /// <summary>Blocks per parallel chunk (and the fewest worth sharing out).</summary>
    private const int ParallelBlocks = 1024;

    private delegate void BlockEncoder(ReadOnlySpan<float> values, Span<byte> block);

    private static void WriteHalf(Span<byte> block, int offset, float value) =>
        BinaryPrimitives.WriteHalfLittleEndian(block.Slice(offset, 2), (Half)value);

    private static float ReadHalf(Span<byte> block, int offset) => TensorDecoder.Half(block, offset);

    /// <summary>ggml's nearest_int: round half to even through a float32 addition of 1.5·2^23.</summary>
    private static int NearestInt(float value)
    {
        float shifted = value + 12582912f;
        return (BitConverter.SingleToInt32Bits(shifted) & 0x007FFFFF) - 0x00400000;
    }

    private static void EncodeQ8_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(block, 0, d);
        for (int j = 0; j < 32; j++)
            block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    /// <summary>Q4_0 and Q5_0: scale from the value of largest magnitude (keeping its sign), codes offset by half the range.</summary>
    private static void EncodeSymmetric(ReadOnlySpan<float> x, Span<byte> block, int bits)
    {
        int half = 1 << (bits - 1);
        float amax = 0, max = 0;
        foreach (float v in x)
        {
            if (amax < Math.Abs(v))
            {
                amax = Math.Abs(v);
                max = v;
            }
        }
        float d = max / -half;
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(block, 0, d);
        int top = (1 << bits) - 1;
        Span<int> codes = stackalloc int[32];
        for (int j = 0; j < 32; j++)
            codes[j] = Math.Min(top, (int)(sbyte)(x[j] * id + (half + 0.5f)));
        PackNibbles(codes, block, bits == 4 ? 2 : 6, bits == 5 ? 2 : -1);
    }

    /// <summary>Q4_1 and Q5_1: the block's range from min to max in equal steps.</summary>
    private static void EncodeWithMin(ReadOnlySpan<float> x, Span<byte> block, int bits)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        foreach (float v in x)
        {
            if (v < min) min = v;
            if (v > max) max = v;
        }
        float d = (max - min) / ((1 << bits) - 1);
        float id = d != 0 ? 1.0f / d : 0.0f;
        WriteHalf(block, 0, d);
        WriteHalf(block, 2, min);
        Span<int> codes = stackalloc int[32];
        for (int j = 0; j < 32; j++)
        {
            int code = (byte)((x[j] - min) * id + 0.5f);
            codes[j] = bits == 4 ? Math.Min(15, code) : code;
        }
        PackNibbles(codes, block, bits == 4 ? 4 : 8, bits == 5 ? 4 : -1);
    }

    /// <summary>Low nibbles of codes j and j + 16 share byte j; a fifth bit of code j goes to bit j of a 32-bit mask.</summary>
    private static void PackNibbles(Span<int> codes, Span<byte> block, int nibblesAt, int highBitsAt)
    {
        uint high = 0;
        for (int j = 0; j < 16; j++)
        {
            block[nibblesAt + j] = (byte)((codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4));
            high |= (uint)((codes[j] >> 4) & 1) << j;
            high |= (uint)((codes[j + 16] >> 4) & 1) << (j + 16);
        }
        if (highBitsAt >= 0) BinaryPrimitives.WriteUInt32LittleEndian(block.Slice(highBitsAt, 4), high);
    }

    /// <summary>
    /// Q4_K and Q5_K (quantize_row_q4_K_ref / q5_K_ref): eight groups of 32, each fit as scale·code − min, the scales and
    /// mins stored as 6-bit multiples of two fp16 super-scales; Q5_K's fifth code bit goes to a 32-byte mask.
    /// </summary>
    private static void EncodeScaleMinK(ReadOnlySpan<float> x, Span<byte> block, int bits)
    {
        int top = (1 << bits) - 1;
        Span<byte> levels = stackalloc byte[256];
        Span<byte> scratch = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            ReadOnlySpan<float> group = x.Slice(32 * j, 32);
            float sumSquares = 0;
            for (int l = 0; l < 32; l++) sumSquares += group[l] * group[l];
            float average = MathF.Sqrt(sumSquares / 32);
            for (int l = 0; l < 32; l++) weights[l] = average + Math.Abs(group[l]);
            scales[j] = bits == 4
                ? FitScaleAndMin(top, group, weights, levels.Slice(32 * j, 32), out mins[j], scratch, -1f, 0.1f, 20, absoluteError: false)
                : FitScaleAndMin(top, group, weights, levels.Slice(32 * j, 32), out mins[j], scratch, -0.5f, 0.1f, 15, absoluteError: false);
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }

        Span<byte> packed = block.Slice(4, 12);
        float inverseScale = maxScale > 0 ? 63f / maxScale : 0f;
        float inverseMin = maxMin > 0 ? 63f / maxMin : 0f;
        for (int j = 0; j < 8; j++)
        {
            byte ls = Math.Min((byte)63, (byte)NearestInt(inverseScale * scales[j]));
            byte lm = Math.Min((byte)63, (byte)NearestInt(inverseMin * mins[j]));
            if (j < 4)
            {
                packed[j] = ls;
                packed[j + 4] = lm;
            }
            else
            {
                packed[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                packed[j - 4] |= (byte)((ls >> 4) << 6);
                packed[j] |= (byte)((lm >> 4) << 6);
            }
        }
        WriteHalf(block, 0, maxScale / 63f);
        WriteHalf(block, 2, maxMin / 63f);

        // The codes are chosen again against the scales as stored (rounded to 6 bits and fp16).
        for (int j = 0; j < 8; j++)
        {
            var (sc, m) = TensorDecoder.ScaleMinK4(j, packed);
            float d = ReadHalf(block, 0) * sc;
            if (d == 0) continue;
            float dm = ReadHalf(block, 2) * m;
            for (int i = 0; i < 32; i++)
                levels[32 * j + i] = (byte)Math.Clamp(NearestInt((x[32 * j + i] + dm) / d), 0, top);
        }
        // Chunk c of 64 codes: code l and l + 32 share nibble byte l; their fifth bits are bits 2c and 2c + 1 of mask byte l.
        Span<byte> qs = bits == 4 ? block.Slice(16, 128) : block.Slice(48, 128);
        Span<byte> qh = block.Slice(16, 32);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            for (int l = 0; l < 32; l++)
            {
                int low = levels[chunk * 64 + l], high = levels[chunk * 64 + 32 + l];
                qs[chunk * 32 + l] = (byte)((low & 0xF) | ((high & 0xF) << 4));
                if (bits == 5) qh[l] |= (byte)(((low >> 4) << (2 * chunk)) | ((high >> 4) << (2 * chunk + 1)));
            }
        }
    }

    /// <summary>
    /// Q2_K (quantize_row_q2_K_ref): sixteen groups of 16, each fit as scale·code − min with codes 0..3 by least absolute
    /// error weighted by |x|, the scales and mins stored as 4-bit multiples of two fp16 super-scales.
    /// </summary>
    private static void EncodeQ2_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        Span<byte> levels = stackalloc byte[256];
        Span<byte> scratch = stackalloc byte[16];
        Span<float> weights = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 16; j++)
        {
            ReadOnlySpan<float> group = x.Slice(16 * j, 16);
            for (int l = 0; l < 16; l++) weights[l] = Math.Abs(group[l]);
            scales[j] = FitScaleAndMin(3, group, weights, levels.Slice(16 * j, 16), out mins[j], scratch, -0.5f, 0.1f, 15, absoluteError: true);
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }

        Span<byte> packed = block[..16];
        if (maxScale > 0)
        {
            float inverse = 15f / maxScale;
            for (int j = 0; j < 16; j++) packed[j] = (byte)NearestInt(inverse * scales[j]);
            WriteHalf(block, 80, maxScale / 15f);
        }
        if (maxMin > 0)
        {
            float inverse = 15f / maxMin;
            for (int j = 0; j < 16; j++) packed[j] |= (byte)(NearestInt(inverse * mins[j]) << 4);
            WriteHalf(block, 82, maxMin / 15f);
        }

        for (int j = 0; j < 16; j++)
        {
            float d = ReadHalf(block, 80) * (packed[j] & 0xF);
            if (d == 0) continue;
            float dm = ReadHalf(block, 82) * (packed[j] >> 4);
            for (int i = 0; i < 16; i++)
                levels[16 * j + i] = (byte)Math.Clamp(NearestInt((x[16 * j + i] + dm) / d), 0, 3);
        }
        PackTwoBitCodes(levels, block.Slice(16, 64));
    }

    /// <summary>Half h of 128 codes: codes l, l + 32, l + 64, l + 96 share byte 32h + l, two bits each from the bottom.</summary>
    private static void PackTwoBitCodes(ReadOnlySpan<byte> levels, Span<byte> qs)
    {
        for (int half = 0; half < 2; half++)
            for (int l = 0; l < 32; l++)
            {
                int at = half * 128 + l;
                qs[half * 32 + l] = (byte)(levels[at] | (levels[at + 32] << 2) | (levels[at + 64] << 4) | (levels[at + 96] << 6));
            }
    }

    /// <summary>
    /// Q3_K (quantize_row_q3_K_ref): sixteen groups of 16 with signed codes −4..3 (<see cref="FitSymmetricScaleIteratively"/>),
    /// their scales stored as signed 6-bit multiples of one fp16 super-scale; the third code bit goes to a 32-byte mask.
    /// </summary>
    private static void EncodeQ3_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        Span<sbyte> levels = stackalloc sbyte[256];
        Span<float> scales = stackalloc float[16];
        float maxScale = 0, maxAbsScale = 0;
        for (int j = 0; j < 16; j++)
        {
            scales[j] = FitSymmetricScaleIteratively(4, x.Slice(16 * j, 16), levels.Slice(16 * j, 16));
            if (Math.Abs(scales[j]) > maxAbsScale)
            {
                maxAbsScale = Math.Abs(scales[j]);
                maxScale = scales[j];
            }
        }

        // Six-bit scale j (stored +32): its low nibble in byte j (j < 8) or the high nibble of byte j − 8, its top two bits
        // in byte 8 + j % 4 at bit 2·(j / 4).
        Span<byte> packed = block.Slice(96, 12);
        if (maxScale != 0)
        {
            float iscale = -32f / maxScale;
            for (int j = 0; j < 16; j++)
            {
                int l = Math.Clamp((int)(sbyte)NearestInt(iscale * scales[j]), -32, 31) + 32;
                if (j < 8) packed[j] = (byte)(l & 0xF);
                else packed[j - 8] |= (byte)((l & 0xF) << 4);
                packed[8 + j % 4] |= (byte)((l >> 4) << (2 * (j / 4)));
            }
            WriteHalf(block, 108, 1 / iscale);
        }

        for (int j = 0; j < 16; j++)
        {
            int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
            int sc = (low | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
            float d = ReadHalf(block, 108) * sc;
            if (d == 0) continue;
            for (int i = 0; i < 16; i++)
                levels[16 * j + i] = (sbyte)(Math.Clamp(NearestInt(x[16 * j + i] / d), -4, 3) + 4);
        }

        // Code i's third bit goes to bit i / 32 of mask byte i % 32; the low two bits are packed as Q2_K's.
        Span<byte> hmask = block[..32];
        Span<byte> low2 = stackalloc byte[256];
        for (int i = 0; i < 256; i++)
        {
            if (levels[i] > 3) hmask[i % 32] |= (byte)(1 << (i / 32));
            low2[i] = (byte)(levels[i] & 3);
        }
        PackTwoBitCodes(low2, block.Slice(32, 64));
    }

    /// <summary>
    /// The first fit of make_qx_quants and make_q3_quants: signed codes −nmax..nmax−1 (not offset) for the scale that puts
    /// the value of largest magnitude, <paramref name="max"/>, at −nmax, and the x²-weighted sums Σw·x·l and Σw·l² of
    /// that fit. False, with all codes 0, when the group is all zeros (below ggml's GROUP_MAX_EPS).
    /// </summary>
    private static bool FirstSymmetricFit(int nmax, ReadOnlySpan<float> x, Span<sbyte> levels, out float max, out float sumLX, out float sumL2)
    {
        max = 0;
        sumLX = sumL2 = 0;
        float amax = 0;
        foreach (float v in x)
        {
            if (Math.Abs(v) > amax)
            {
                amax = Math.Abs(v);
                max = v;
            }
        }
        if (amax < GroupMaxEps)
        {
            levels.Clear();
            return false;
        }
        float iscale = -nmax / max;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Math.Max(-nmax, Math.Min(nmax - 1, NearestInt(iscale * x[i])));
            levels[i] = (sbyte)l;
            float w = x[i] * x[i];
            sumLX += w * x[i] * l;
            sumL2 += w * l * l;
        }
        return true;
    }

    /// <summary>
    /// ggml's make_q3_quants with do_rmse: signed codes −nmax..nmax−1 (returned +nmax) from the value of largest magnitude,
    /// then up to five passes that move single codes while that raises the weighted (x²) least-squares fit.
    /// </summary>
    private static float FitSymmetricScaleIteratively(int nmax, ReadOnlySpan<float> x, Span<sbyte> levels)
    {
        if (!FirstSymmetricFit(nmax, x, levels, out _, out float sumLX, out float sumL2)) return 0f;
        for (int pass = 0; pass < 5; pass++)
        {
            bool changed = false;
            for (int i = 0; i < x.Length; i++)
            {
                float w = x[i] * x[i];
                float lx = sumLX - w * x[i] * levels[i];
                if (!(lx > 0)) continue;
                float l2 = sumL2 - w * levels[i] * levels[i];
                int candidate = Math.Max(-nmax, Math.Min(nmax - 1, NearestInt(x[i] * l2 / lx)));
                if (candidate == levels[i]) continue;
                lx += w * x[i] * candidate;
                l2 += w * candidate * candidate;
                if (l2 > 0 && lx * lx * sumL2 > sumLX * sumLX * l2)
                {
                    levels[i] = (sbyte)candidate;
                    sumLX = lx;
                    sumL2 = l2;
                    changed = true;
                }
            }
            if (!changed) break;
        }
        for (int i = 0; i < x.Length; i++) levels[i] += (sbyte)nmax;
        return sumL2 > 0 ? sumLX / sumL2 : 0f;
    }

    /// <summary>
    /// ggml's make_qkx2_quants: codes 0..nmax for scale·L − min, starting from the range and trying nstep+1 wider or
    /// narrower steps, each refit by weighted least squares and kept when its weighted squared (or, with
    /// <paramref name="absoluteError"/>, absolute) error is lower; returns the scale and (as <paramref name="negatedMin"/>) −min.
    /// </summary>
    private static float FitScaleAndMin(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> levels,
        out float negatedMin, Span<byte> trial, float rmin, float rdelta, int nstep, bool absoluteError)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            levels.Clear();
            negatedMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            levels[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * levels[i] + min - x[i];
            bestError += weights[i] * (absoluteError ? Math.Abs(diff) : diff * diff);
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Max(0, Math.Min(nmax, NearestInt(iscale * (x[i] - min))));
                trial[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float determinant = sumW * sumL2 - sumL * sumL;
            if (determinant > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / determinant;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / determinant;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float error = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * trial[i] + thisMin - x[i];
                    error += weights[i] * (absoluteError ? Math.Abs(diff) : diff * diff);
                }
                if (error < bestError)
                {
                    trial[..n].CopyTo(levels);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        negatedMin = -min;
        return scale;
    }

    private static void EncodeQ6_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        Span<sbyte> levels = stackalloc sbyte[256];
        Span<float> scales = stackalloc float[16];
        float maxScale = 0, maxAbsScale = 0;
        for (int g = 0; g < 16; g++)
        {
            float scale = FitSymmetricScale(32, x.Slice(16 * g, 16), levels.Slice(16 * g, 16));
            scales[g] = scale;
            if (Math.Abs(scale) > maxAbsScale)
            {
                maxAbsScale = Math.Abs(scale);
                maxScale = scale;
            }
        }
        if (maxAbsScale < GroupMaxEps)
            return; // the block stays all zeros: d = 0
        float iscale = -128f / maxScale;
        WriteHalf(block, 208, 1 / iscale);
        Span<byte> groupScales = block.Slice(192, 16);
        for (int g = 0; g < 16; g++)
            groupScales[g] = (byte)(sbyte)Math.Min(127, NearestInt(iscale * scales[g]));
        for (int g = 0; g < 16; g++)
        {
            float d = ReadHalf(block, 208) * (sbyte)groupScales[g];
            if (d == 0) continue;
            for (int i = 0; i < 16; i++)
                levels[16 * g + i] = (sbyte)(Math.Clamp(NearestInt(x[16 * g + i] / d), -32, 31) + 32);
        }
        Span<byte> ql = block[..128], qh = block.Slice(128, 64);
        for (int half = 0; half < 2; half++)
        {
            for (int l = 0; l < 32; l++)
            {
                int at = half * 128 + l;
                int q1 = levels[at], q2 = levels[at + 32], q3 = levels[at + 64], q4 = levels[at + 96];
                ql[half * 64 + l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[half * 64 + 32 + l] = (byte)((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[half * 32 + l] = (byte)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }

    /// <summary>
    /// ggml's make_qx_quants with rmse_type 1 (weights x²): signed codes −nmax..nmax−1 (stored +nmax), trying 18 scales
    /// around nmax/max and keeping the least-squares best.
    /// </summary>
    private static float FitSymmetricScale(int nmax, ReadOnlySpan<float> x, Span<sbyte> levels)
    {
        if (!FirstSymmetricFit(nmax, x, levels, out float max, out float sumLX, out float sumL2)) return 0f;
        for (int i = 0; i < x.Length; i++) levels[i] += (sbyte)nmax;
        float scale = sumL2 != 0 ? sumLX / sumL2 : 0.0f;
        float best = scale * sumLX;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            float iscale = -(nmax + 0.1f * step) / max;
            sumLX = sumL2 = 0;
            for (int i = 0; i < x.Length; i++)
            {
                int l = Math.Max(-nmax, Math.Min(nmax - 1, NearestInt(iscale * x[i])));
                float w = x[i] * x[i];
                sumLX += w * x[i] * l;
                sumL2 += w * l * l;
            }
            if (sumL2 > 0 && sumLX * sumLX > best * sumL2)
            {
                for (int i = 0; i < x.Length; i++)
                    levels[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, NearestInt(iscale * x[i]))));
                scale = sumLX / sumL2;
                best = scale * sumLX;
            }
        }
        return scale;
    }
}
