using ILGPU;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Quantization;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// A quantized weight's blocks → its values, one thread per value, each exactly what <see cref="TensorDecoder"/> gives
/// (the same float32 products and sums in the same order), times the weight's scale. The format is a launch argument
/// (the same for every thread, so the switch does not diverge). fp8 reads the decoder's own 256-value tables, so its
/// values are the host's by construction; the ggml formats' float16 scales are widened by bit manipulation
/// (<see cref="HalfWords.Float16ToFloat"/>), exact for every finite half.
/// </summary>
public static class DequantizeKernels
{
    /// <summary>Where each fp8 format's 256 values start in the table the kernels take (E4M3, then E5M2).</summary>
    public const int E4M3Table = 0, E5M2Table = 256, Fp8TableLength = 512;

    /// <summary>values[i] = the weight's value i (row-major [out, in]) in float32.</summary>
    public static void DequantizeToFloat32(Index1D index, int format, float scale,
        ArrayView<byte> blocks, ArrayView<float> fp8Tables, ArrayView<float> values) =>
        values[index] = Scaled(Value((TensorFormat)format, blocks, fp8Tables, index), scale);

    /// <summary>
    /// The same value rounded to bf16 (nearest even): the GemmEx operand of <see cref="GpuPrecision.BFloat16"/>, which
    /// promises bf16 GEMM inputs.
    /// </summary>
    public static void DequantizeToBFloat16(Index1D index, int format, float scale,
        ArrayView<byte> blocks, ArrayView<float> fp8Tables, ArrayView<ushort> words) =>
        words[index] = HalfWords.FloatToBFloat16(Scaled(Value((TensorFormat)format, blocks, fp8Tables, index), scale));

    /// <summary>The fp8 tables the kernels read: <see cref="Float8"/>'s values for every code.</summary>
    public static float[] Fp8Tables()
    {
        var table = new float[Fp8TableLength];
        for (int code = 0; code < 256; code++)
        {
            table[E4M3Table + code] = Float8.E4M3ToSingle((byte)code);
            table[E5M2Table + code] = Float8.E5M2ToSingle((byte)code);
        }
        return table;
    }

    // TensorDecoder skips the product when the scale is 1; so do we (it matters only for a NaN's payload).
    private static float Scaled(float value, float scale) => scale == 1f ? value : Product(value, scale);

    /// <summary>
    /// a·b rounded to float32 on its own. PTX's plain mul.f32 lets the driver's compiler fuse it with a following add
    /// into an FMA (one rounding instead of two, a different value); mul.rn.f32 may not be fused. Elsewhere (the
    /// simulator) .NET does not contract float arithmetic.
    /// </summary>
    internal static float Product(float a, float b)
    {
        if (!CudaAsm.IsSupported)
            return a * b;
        CudaAsm.Emit("mul.rn.f32 %0, %1, %2;", out float product, a, b);
        return product;
    }

    private static float Value(TensorFormat format, ArrayView<byte> blocks, ArrayView<float> fp8Tables, long index) => format switch
    {
        TensorFormat.F8_E4M3 => fp8Tables[E4M3Table + blocks[index]],
        TensorFormat.F8_E5M2 => fp8Tables[E5M2Table + blocks[index]],
        TensorFormat.Q8_0 => Q8_0(blocks, index / 32 * 34, (int)(index % 32)),
        TensorFormat.Q4_0 => Q4_0(blocks, index / 32 * 18, (int)(index % 32)),
        TensorFormat.Q4_1 => Q4_1(blocks, index / 32 * 20, (int)(index % 32)),
        TensorFormat.Q5_0 => Q5_0(blocks, index / 32 * 22, (int)(index % 32)),
        TensorFormat.Q5_1 => Q5_1(blocks, index / 32 * 24, (int)(index % 32)),
        TensorFormat.Q2_K => Q2_K(blocks, index / 256 * 84, (int)(index % 256)),
        TensorFormat.Q3_K => Q3_K(blocks, index / 256 * 110, (int)(index % 256)),
        TensorFormat.Q4_K => ScaleMinK(blocks, index / 256 * 144, hasHighBits: false, (int)(index % 256)),
        TensorFormat.Q5_K => ScaleMinK(blocks, index / 256 * 176, hasHighBits: true, (int)(index % 256)),
        // The last format: UploadQuantizedWeight keeps only fp8 and the ggml formats (plain floats are decoded there).
        _ => Q6_K(blocks, index / 256 * 210, (int)(index % 256)),
    };

    private static float Half(ArrayView<byte> blocks, long at) => HalfWords.Float16ToFloat((ushort)(blocks[at] | blocks[at + 1] << 8));

    private static uint UInt32(ArrayView<byte> blocks, long at) =>
        blocks[at] | (uint)blocks[at + 1] << 8 | (uint)blocks[at + 2] << 16 | (uint)blocks[at + 3] << 24;

    /// <summary>The 4-bit formats keep element j in the low nibble of byte j and element j + 16 in its high nibble.</summary>
    private static int Nibble(ArrayView<byte> qs, long at, int j) => j < 16 ? qs[at + j] & 0x0F : qs[at + j - 16] >> 4;

    private static float Q8_0(ArrayView<byte> b, long block, int j) => Product((sbyte)b[block + 2 + j], Half(b, block));

    private static float Q4_0(ArrayView<byte> b, long block, int j) => Product(Nibble(b, block + 2, j) - 8, Half(b, block));

    private static float Q4_1(ArrayView<byte> b, long block, int j) => Product(Nibble(b, block + 4, j), Half(b, block)) + Half(b, block + 2);

    // The 5-bit formats add bit j of a 32-bit mask as element j's fifth bit.
    private static float Q5_0(ArrayView<byte> b, long block, int j) =>
        Product((int)((uint)Nibble(b, block + 6, j) | ((UInt32(b, block + 2) >> j) & 1) << 4) - 16, Half(b, block));

    private static float Q5_1(ArrayView<byte> b, long block, int j) =>
        Product((int)((uint)Nibble(b, block + 8, j) | ((UInt32(b, block + 4) >> j) & 1) << 4), Half(b, block)) + Half(b, block + 2);

    // K-quants: each 128-value half reads 32 bytes of packed bits, one 2-bit field per 32 values (shift 0, 2, 4, 6), in
    // groups of 16 values with their own scale.
    private static float Q2_K(ArrayView<byte> b, long block, int e)
    {
        int half = e / 128, pass = e % 128 / 32, i = e % 32;
        int scales = b[block + half * 8 + pass * 2 + i / 16];
        float d = Half(b, block + 80), dmin = Half(b, block + 82);
        float dl = Product(d, scales & 0xF), ml = Product(dmin, scales >> 4);
        return Product(dl, (b[block + 16 + half * 32 + i] >> (2 * pass)) & 3) - ml;
    }

    private static float Q3_K(ArrayView<byte> b, long block, int e)
    {
        int half = e / 128, pass = e % 128 / 32, i = e % 32;
        int group = half * 8 + pass * 2 + i / 16, bit = half * 4 + pass;
        long packed = block + 96;
        int low = group < 8 ? b[packed + group] & 0xF : b[packed + group - 8] >> 4;
        int high = (b[packed + 8 + group % 4] >> (2 * (group / 4))) & 3;
        int scale = (low | (high << 4)) - 32;
        int value = ((b[block + 32 + half * 32 + i] >> (2 * pass)) & 3) - ((b[block + i] >> bit & 1) != 0 ? 0 : 4);
        return Product(Product(Half(b, block + 108), scale), value);
    }

    /// <summary>
    /// Q4_K and Q5_K: 8 groups of 32 with 6-bit scales and mins packed in 12 bytes (<see cref="TensorDecoder.ScaleMinK4"/>);
    /// each 64 values read 32 bytes, low nibbles then high nibbles; Q5_K adds a fifth bit per value from 32 bytes of qh.
    /// </summary>
    private static float ScaleMinK(ArrayView<byte> b, long block, bool hasHighBits, int e)
    {
        int chunk = e / 64, upper = e % 64 / 32, l = e % 32, group = 2 * chunk + upper;
        long scales = block + 4, qs = block + (hasHighBits ? 48 : 16);
        int scale, min;
        if (group < 4)
        {
            scale = b[scales + group] & 63;
            min = b[scales + group + 4] & 63;
        }
        else
        {
            scale = (b[scales + group + 4] & 0xF) | ((b[scales + group - 4] >> 6) << 4);
            min = (b[scales + group + 4] >> 4) | ((b[scales + group] >> 6) << 4);
        }
        int q = b[qs + chunk * 32 + l];
        int nibble = upper == 0 ? q & 0xF : q >> 4;
        int high = hasHighBits ? (b[block + 16 + l] >> group) & 1 : 0;
        float dl = Product(Half(b, block), scale), ml = Product(Half(b, block + 2), min);
        return Product(dl, nibble + 16 * high) - ml;
    }

    /// <summary>Q6_K: each 128-value half reads 64 bytes of low nibbles and 32 of 2-bit high parts; 16 signed 8-bit scales.</summary>
    private static float Q6_K(ArrayView<byte> b, long block, int e)
    {
        int half = e / 128, quarter = e % 128 / 32, l = e % 32;
        int low = b[block + half * 64 + (quarter & 1) * 32 + l];
        int nibble = quarter < 2 ? low & 0xF : low >> 4;
        int high = (b[block + 128 + half * 32 + l] >> (2 * quarter)) & 3;
        sbyte scale = (sbyte)b[block + 192 + half * 8 + l / 16 + 2 * quarter];
        return Product(Product(Half(b, block + 208), scale), (nibble | (high << 4)) - 32);
    }
}
