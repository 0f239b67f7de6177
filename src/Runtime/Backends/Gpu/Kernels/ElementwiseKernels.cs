using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// One thread per output element. Every operand is addressed through its own <see cref="StridedMatrix"/> with
/// the output's flat row and column, so broadcast operands (stride 0) and column slices need no copies.
/// A thread reads its inputs before writing its one output, which is why y may alias an input.
/// </summary>
public static class ElementwiseKernels
{
    public static void Copy(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] = xData[x.IndexOf(flatRow, col)];
    }

    public static void ScaleShift(Index1D index, int cols, float scale, float shift,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] = scale * xData[x.IndexOf(flatRow, col)] + shift;
    }

    /// <summary>One thread per element of y: y[b, c, r] = x[b, r, c] (y has xCols rows of xRows columns).</summary>
    public static void Transpose(Index1D index, int xRows, int xCols,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / xRows;
        int r = index - (int)(flatRow * xRows);
        long batch = flatRow / xCols;
        int c = (int)(flatRow - batch * xCols);
        yData[y.IndexOf(flatRow, r)] = xData[x.IndexOf(batch * xRows + r, c)];
    }

    public static void Add(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix a, Elements aData,
        StridedMatrix b, Elements bData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] = aData[a.IndexOf(flatRow, col)] + bData[b.IndexOf(flatRow, col)];
    }

    public static void Silu(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        // For very negative v, exp(−v) overflows to +inf and v/inf is −0: the right limit, no NaN.
        yData[y.IndexOf(flatRow, col)] = v / (1f + XMath.Exp(-v));
    }

    public static void GeluTanh(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        const float SqrtTwoOverPi = 0.7978845608028654f;
        float u = SqrtTwoOverPi * (v + 0.044715f * v * v * v);
        yData[y.IndexOf(flatRow, col)] = 0.5f * v * (1f + StableTanh(u));
    }

    public static void Modulate(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        StridedMatrix shift, Elements shiftData, StridedMatrix scale, Elements scaleData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        yData[y.IndexOf(flatRow, col)] =
            (1f + scaleData[scale.IndexOf(flatRow, col)]) * v + shiftData[shift.IndexOf(flatRow, col)];
    }

    public static void GatedResidual(Index1D index, int cols,
        StridedMatrix y, Elements yData, StridedMatrix residual, Elements residualData,
        StridedMatrix x, Elements xData, StridedMatrix gate, Elements gateData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] = residualData[residual.IndexOf(flatRow, col)]
            + gateData[gate.IndexOf(flatRow, col)] * xData[x.IndexOf(flatRow, col)];
    }

    /// <summary>y[row, col] += bias[col]: the bias of a cuBLAS GEMM, which itself computes only x·Wᵀ.</summary>
    public static void AddBiasToRows(Index1D index, int cols,
        StridedMatrix y, Elements yData, ArrayView<float> bias)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        yData[y.IndexOf(flatRow, col)] += bias[col];
    }

    /// <summary>
    /// Rounds float32 activations to bf16 (round to nearest even, NaN kept quiet) into a dense [rows, cols]
    /// buffer: the GEMM input of <see cref="GpuPrecision.BFloat16"/>.
    /// </summary>
    public static void RoundToBFloat16(Index1D index, int cols,
        ArrayView<ushort> dense, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        dense[index] = HalfWords.FloatToBFloat16(xData[x.IndexOf(flatRow, col)]);
    }

    /// <summary>Widens dense bf16 words to float32 (exact).</summary>
    public static void WidenBFloat16(Index1D index, ArrayView<float> wide, ArrayView<ushort> narrow) =>
        wide[index] = HalfWords.BFloat16ToFloat(narrow[index]);

    /// <summary>Widens dense IEEE half words to float32 (exact).</summary>
    public static void WidenFloat16(Index1D index, ArrayView<float> wide, ArrayView<ushort> narrow) =>
        wide[index] = HalfWords.Float16ToFloat(narrow[index]);

    /// <summary>tanh without overflow: exp of a non-positive argument only.</summary>
    internal static float StableTanh(float u)
    {
        float e = XMath.Exp(-2f * XMath.Abs(u));
        float magnitude = (1f - e) / (1f + e);
        return u < 0f ? -magnitude : magnitude;
    }
}

/// <summary>16-bit float words (bf16 and IEEE half), stored as ushort since ILGPU has no bfloat16 type.</summary>
public static class HalfWords
{
    public static float BFloat16ToFloat(ushort word) => Interop.IntAsFloat((uint)word << 16);

    public static ushort FloatToBFloat16(float value)
    {
        uint bits = Interop.FloatAsInt(value);
        if ((bits & 0x7FFFFFFFu) > 0x7F800000u)
            return (ushort)((bits >> 16) | 0x0040u);
        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>IEEE binary16 to float32 by bit manipulation: exact for normals, subnormals, ±0, inf and NaN.</summary>
    public static float Float16ToFloat(ushort word)
    {
        uint sign = (uint)(word & 0x8000) << 16;
        int exponent = (word >> 10) & 0x1F;
        uint mantissa = (uint)(word & 0x3FF);
        if (exponent == 0x1F)
            return Interop.IntAsFloat(sign | 0x7F800000u | (mantissa << 13));
        if (exponent == 0)
        {
            // Zero or subnormal: mantissa·2^−24 is exact in float32.
            float magnitude = mantissa * 5.9604644775390625e-8f;
            return sign != 0 ? -magnitude : magnitude;
        }
        return Interop.IntAsFloat(sign | (uint)(exponent + 112) << 23 | (mantissa << 13));
    }
}
