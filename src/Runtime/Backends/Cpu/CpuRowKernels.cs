using System.Runtime.Intrinsics;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// The per-row bodies of the row ops, on contiguous rows of n floats. Every kernel reads an element before it
/// writes the same position, so an output row may be the input row (in-place ops).
/// </summary>
internal static unsafe class CpuRowKernels
{
    private const int W = 16;

    public static void LayerNorm(float* y, float* x, int n, float eps)
    {
        // Two passes, the second also summing the deviations: that sum is the rounding error of the float32 mean
        // (the corrected two-pass algorithm), which matters when rows sit far from zero.
        float roughMean = CpuVector.Sum(x, n) / n;
        float squares = CpuVector.SumDeviations(x, roughMean, n, out float deviationSum);
        float correction = deviationSum / n;
        float variance = MathF.Max(0f, squares / n - correction * correction);
        float inverse = 1f / MathF.Sqrt(variance + eps);
        var m = Vector512.Create(roughMean);
        var d = Vector512.Create(correction);
        var s = Vector512.Create(inverse);
        int i = 0;
        for (; i + W <= n; i += W) Vector512.Store((Vector512.Load(x + i) - m - d) * s, y + i);
        for (; i < n; i++) y[i] = (x[i] - roughMean - correction) * inverse;
    }

    public static void RmsNorm(float* y, float* x, float* scale, int groupSize, int n, float eps)
    {
        for (int g = 0; g < n; g += groupSize)
        {
            float* xg = x + g, yg = y + g;
            float meanSquare = CpuVector.SumSquaredDeviations(xg, 0f, groupSize) / groupSize;
            var inverse = Vector512.Create(1f / MathF.Sqrt(meanSquare + eps));
            int i = 0;
            for (; i + W <= groupSize; i += W) Vector512.Store(Vector512.Load(xg + i) * inverse * Vector512.Load(scale + i), yg + i);
            for (; i < groupSize; i++) yg[i] = xg[i] * inverse[0] * scale[i];
        }
    }

    public static void Modulate(float* y, float* x, float* shift, float* scale, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> v = Vector512.Load(x + i);
            Vector512.Store(Vector512.FusedMultiplyAdd(v, Vector512.Load(scale + i), v + Vector512.Load(shift + i)), y + i);
        }
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(x[i], scale[i], x[i] + shift[i]);
    }

    public static void GatedResidual(float* y, float* residual, float* x, float* gate, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
            Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(gate + i), Vector512.Load(x + i), Vector512.Load(residual + i)), y + i);
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(gate[i], x[i], residual[i]);
    }

    public static void Add(float* y, float* a, float* b, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W) Vector512.Store(Vector512.Load(a + i) + Vector512.Load(b + i), y + i);
        for (; i < n; i++) y[i] = a[i] + b[i];
    }

    public static void Silu(float* y, float* x, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> v = Vector512.Load(x + i);
            Vector512.Store(CpuVector.TimesSigmoid(v, v), y + i);
        }
        for (; i < n; i++) y[i] = CpuVector.TimesSigmoid(x[i], x[i]);
    }

    /// <summary>0.5x(1 + tanh u) = x·sigmoid(2u), u = √(2/π)(x + 0.044715x³): no tanh, and no cancellation near u = 0.</summary>
    public static void GeluTanh(float* y, float* x, int n)
    {
        const float TwoSqrtTwoOverPi = 1.5957691216057308f;
        const float Cubic = 0.044715f;
        var k = Vector512.Create(TwoSqrtTwoOverPi);
        var c = Vector512.Create(Cubic);
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> v = Vector512.Load(x + i);
            Vector512<float> z = k * Vector512.FusedMultiplyAdd(c * v * v, v, v);
            Vector512.Store(CpuVector.TimesSigmoid(v, z), y + i);
        }
        for (; i < n; i++)
        {
            float v = x[i];
            y[i] = CpuVector.TimesSigmoid(v, TwoSqrtTwoOverPi * (v + Cubic * v * v * v));
        }
    }

    public static void Copy(float* y, float* x, long n)
    {
        if (y != x) Buffer.MemoryCopy(x, y, (long)n * sizeof(float), n * sizeof(float));
    }

    /// <summary>
    /// out = M·(x0, x1) per interleaved pair with M from pe = [m00, m01, m10, m11] per pair. The row's matrices are
    /// first split into a diagonal and an off-diagonal vector, so each head is then out = d·x + o·swap(x).
    /// </summary>
    public static void ApplyRope(float* y, float* x, float* pe, int headDim, int heads, float* diagonal, float* offDiagonal)
    {
        for (int p = 0; p < headDim / 2; p++)
        {
            diagonal[2 * p] = pe[4 * p];
            diagonal[2 * p + 1] = pe[4 * p + 3];
            offDiagonal[2 * p] = pe[4 * p + 1];
            offDiagonal[2 * p + 1] = pe[4 * p + 2];
        }
        Vector512<int> swapPairs = Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        for (int h = 0; h < heads; h++)
        {
            float* xh = x + (long)h * headDim, yh = y + (long)h * headDim;
            int i = 0;
            for (; i + W <= headDim; i += W)
            {
                Vector512<float> v = Vector512.Load(xh + i);
                Vector512<float> swapped = Vector512.Shuffle(v, swapPairs);
                Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(diagonal + i), v, Vector512.Load(offDiagonal + i) * swapped), yh + i);
            }
            for (; i < headDim; i += 2)
            {
                float x0 = xh[i], x1 = xh[i + 1];
                yh[i] = diagonal[i] * x0 + offDiagonal[i] * x1;
                yh[i + 1] = offDiagonal[i + 1] * x0 + diagonal[i + 1] * x1;
            }
        }
    }
}
