namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// The two 8-bit float formats of safetensors checkpoints (OCP FP8, as PyTorch's float8_e4m3fn and float8_e5m2).
/// E4M3FN: bias 7, no infinities, S.1111.111 is NaN, largest finite 448. E5M2: bias 15, IEEE-like with ±inf and
/// NaN, largest finite 57344. Encoding rounds to nearest even and saturates finite values that overflow to the
/// largest finite value (what ComfyUI's fp8 export does by clamping first); NaN stays NaN, and ±inf becomes ±448 in
/// E4M3 (it has no infinity) and stays ±inf in E5M2.
/// </summary>
public static class Float8
{
    private readonly record struct Layout(int MantissaBits, int Bias, byte MaxFiniteCode, byte NaNCode);

    private static readonly Layout E4M3 = new(3, 7, 0x7E, 0x7F);
    private static readonly Layout E5M2 = new(2, 15, 0x7B, 0x7F);

    private static readonly float[] E4M3Values = Table(E4M3);
    private static readonly float[] E5M2Values = Table(E5M2);

    public static float E4M3ToSingle(byte code) => E4M3Values[code];

    public static float E5M2ToSingle(byte code) => E5M2Values[code];

    public static byte E4M3FromSingle(float value) => Encode(value, E4M3);

    public static byte E5M2FromSingle(float value) =>
        float.IsInfinity(value) ? (byte)(value > 0 ? 0x7C : 0xFC) : Encode(value, E5M2);

    public static void E4M3ToSingle(ReadOnlySpan<byte> source, Span<float> destination) => Decode(source, destination, E4M3Values);

    public static void E5M2ToSingle(ReadOnlySpan<byte> source, Span<float> destination) => Decode(source, destination, E5M2Values);

    private static void Decode(ReadOnlySpan<byte> source, Span<float> destination, float[] table)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException($"{source.Length} fp8 bytes cannot fill {destination.Length} floats");
        for (int i = 0; i < source.Length; i++) destination[i] = table[source[i]];
    }

    private static float[] Table(Layout layout)
    {
        var values = new float[256];
        int exponentBits = 7 - layout.MantissaBits;
        int exponentMask = (1 << exponentBits) - 1;
        for (int code = 0; code < 256; code++)
        {
            int exponent = (code >> layout.MantissaBits) & exponentMask;
            int mantissa = code & ((1 << layout.MantissaBits) - 1);
            double magnitude;
            if ((code & 0x7F) == layout.NaNCode || (layout == E5M2 && exponent == exponentMask && mantissa != 0))
                magnitude = double.NaN;
            else if (layout == E5M2 && exponent == exponentMask)
                magnitude = double.PositiveInfinity;
            else if (exponent == 0)
                magnitude = Math.ScaleB(mantissa, 1 - layout.Bias - layout.MantissaBits);
            else
                magnitude = Math.ScaleB((1 << layout.MantissaBits) + mantissa, exponent - layout.Bias - layout.MantissaBits);
            values[code] = (float)((code & 0x80) != 0 ? -magnitude : magnitude);
        }
        return values;
    }

    private static byte Encode(float value, Layout layout)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        byte sign = (byte)((bits >> 24) & 0x80);
        uint magnitudeBits = bits & 0x7FFF_FFFF;
        if (magnitudeBits > 0x7F80_0000)
            return (byte)(sign | layout.NaNCode);

        float magnitude = BitConverter.UInt32BitsToSingle(magnitudeBits);
        int code;
        if (magnitude < MathF.ScaleB(1f, 1 - layout.Bias))
        {
            // Below the smallest normal the code is the count of subnormal steps; a carry to 2^M is the smallest normal's code.
            code = (int)Math.Round(Math.ScaleB((double)magnitude, layout.Bias - 1 + layout.MantissaBits), MidpointRounding.ToEven);
        }
        else
        {
            // Round float32's 23 mantissa bits to M, to nearest even; a carry moves into the exponent, as it should.
            int dropped = 23 - layout.MantissaBits;
            ulong rounded = ((ulong)magnitudeBits + (1u << (dropped - 1)) - 1 + ((magnitudeBits >> dropped) & 1)) >> dropped;
            long rebased = (long)rounded - ((long)(127 - layout.Bias) << layout.MantissaBits);
            code = (int)Math.Min(rebased, layout.MaxFiniteCode);
        }
        return (byte)(sign | Math.Min(code, layout.MaxFiniteCode));
    }
}
