using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// Sinusoidal timestep embeddings and RoPE tables. Their angles reach 3·10⁴ rad (guidance 30 × 1000), far outside
/// the range where PTX's sin.approx/cos.approx are accurate, so angles are reduced to [−π, π] in float64 first.
/// Frequency tables are computed on the host (exactly as the CPU backend does) and passed in.
/// </summary>
public static class EmbeddingKernels
{
    /// <summary>One thread per output element; y.Cols = 2·half, cos in the first half, sin in the second.</summary>
    public static void Timestep(Index1D index, int half, float timeFactor,
        StridedMatrix y, Elements yData, StridedMatrix t, Elements tData, ArrayView<float> frequencies)
    {
        int cols = 2 * half;
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        bool cosine = col < half;
        int k = cosine ? col : col - half;
        float scaledTime = timeFactor * tData[t.IndexOf(flatRow, 0)];
        float angle = scaledTime * frequencies[k];
        float reduced = ReduceAngle(angle);
        yData[y.IndexOf(flatRow, col)] = cosine ? XMath.Cos(reduced) : XMath.Sin(reduced);
    }

    /// <summary>
    /// One thread per (flat row, angle p): angle = ids[row, axisOfAngle[p]]·omega[p] in float64, written as the
    /// rotation matrix [cos, −sin, sin, cos] at columns 4p..4p+3.
    /// </summary>
    public static void Rope(Index1D index, int angles,
        StridedMatrix pe, Elements peData, StridedMatrix ids, Elements idsData,
        ArrayView<double> omega, ArrayView<int> axisOfAngle)
    {
        long flatRow = index / angles;
        int p = index - (int)(flatRow * angles);
        double angle = idsData[ids.IndexOf(flatRow, axisOfAngle[p])] * omega[p];
        float reduced = ReduceAngle(angle);
        float cos = XMath.Cos(reduced);
        float sin = XMath.Sin(reduced);
        long first = pe.IndexOf(flatRow, 4 * p);
        peData[first] = cos;
        peData[first + 1] = -sin;
        peData[first + 2] = sin;
        peData[first + 3] = cos;
    }

    /// <summary>
    /// One thread per interleaved pair: (x[2i], x[2i+1]) of head-local pair p = i mod headDim/2 is multiplied by
    /// pe's 2×2 matrix p of the same token. Reads both before writing both, so y may alias x.
    /// </summary>
    public static void ApplyRope(Index1D index, int pairsPerRow, int pairsPerHead,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        StridedMatrix pe, Elements peData)
    {
        long flatRow = index / pairsPerRow;
        int pair = index - (int)(flatRow * pairsPerRow);
        int p = pair - pair / pairsPerHead * pairsPerHead;
        long source = x.IndexOf(flatRow, 2 * pair);
        float x0 = xData[source];
        float x1 = xData[source + 1];
        long matrix = pe.IndexOf(flatRow, 4 * p);
        float m00 = peData[matrix], m01 = peData[matrix + 1], m10 = peData[matrix + 2], m11 = peData[matrix + 3];
        long target = y.IndexOf(flatRow, 2 * pair);
        yData[target] = m00 * x0 + m01 * x1;
        yData[target + 1] = m10 * x0 + m11 * x1;
    }

    /// <summary>angle − 2π·round(angle/2π), in float64 so the result is accurate to float32 for any angle.</summary>
    internal static float ReduceAngle(double angle)
    {
        const double TwoPi = 6.283185307179586476925286766559;
        double turns = XMath.Round(angle * (1.0 / TwoPi));
        return (float)(angle - turns * TwoPi);
    }
}
