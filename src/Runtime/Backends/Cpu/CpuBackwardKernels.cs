using System.Runtime.Intrinsics;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// The per-row and per-column-chunk bodies of the training ops, on contiguous runs of floats. Like
/// <see cref="CpuRowKernels"/>, each kernel reads every input at a position before writing the output there, so the
/// output may be one of the inputs where the op allows it.
/// </summary>
internal static unsafe class CpuBackwardKernels
{
    private const int W = 16;

    /// <summary>dx = rstd·(dy − mean(dy) − x̂·mean(dy·x̂)), with mean and rstd recomputed exactly as the forward does.</summary>
    public static void LayerNormBackward(float* dx, float* dy, float* x, int n, float eps)
    {
        float roughMean = CpuVector.Sum(x, n) / n;
        float squares = CpuVector.SumDeviations(x, roughMean, n, out float deviationSum);
        float correction = deviationSum / n;
        float mean = roughMean + correction;
        float variance = MathF.Max(0f, squares / n - correction * correction);
        float rstd = 1f / MathF.Sqrt(variance + eps);

        var m = Vector512.Create(mean);
        var r = Vector512.Create(rstd);
        Vector512<float> dySum = default, dyXhatSum = default;
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> g = Vector512.Load(dy + i);
            dySum += g;
            dyXhatSum = Vector512.FusedMultiplyAdd(g, (Vector512.Load(x + i) - m) * r, dyXhatSum);
        }
        float sumDy = Vector512.Sum(dySum), sumDyXhat = Vector512.Sum(dyXhatSum);
        for (int j = i; j < n; j++)
        {
            sumDy += dy[j];
            sumDyXhat += dy[j] * (x[j] - mean) * rstd;
        }

        float meanDy = sumDy / n, meanDyXhat = sumDyXhat / n;
        var meanDyVector = Vector512.Create(meanDy);
        var meanDyXhatVector = Vector512.Create(meanDyXhat);
        i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> xhat = (Vector512.Load(x + i) - m) * r;
            Vector512<float> centred = Vector512.Load(dy + i) - meanDyVector - xhat * meanDyXhatVector;
            Vector512.Store(centred * r, dx + i);
        }
        for (; i < n; i++)
        {
            float xhat = (x[i] - mean) * rstd;
            dx[i] = (dy[i] - meanDy - xhat * meanDyXhat) * rstd;
        }
    }

    /// <summary>Per group: dx = r·g − x·r³·Σ(g·x)/groupSize with g = dy·scale and r = rsqrt(mean(x²) + eps).</summary>
    public static void RmsNormBackward(float* dx, float* dy, float* x, float* scale, int groupSize, int n, float eps)
    {
        for (int start = 0; start < n; start += groupSize)
        {
            float* xg = x + start, dyg = dy + start, dxg = dx + start;
            float meanSquare = CpuVector.SumSquaredDeviations(xg, 0f, groupSize) / groupSize;
            float r = 1f / MathF.Sqrt(meanSquare + eps);
            Vector512<float> dotVector = default;
            int i = 0;
            for (; i + W <= groupSize; i += W)
                dotVector = Vector512.FusedMultiplyAdd(Vector512.Load(dyg + i) * Vector512.Load(scale + i), Vector512.Load(xg + i), dotVector);
            float dot = Vector512.Sum(dotVector);
            for (int j = i; j < groupSize; j++) dot += dyg[j] * scale[j] * xg[j];

            float projection = r * r * r * dot / groupSize;
            var rVector = Vector512.Create(r);
            var projectionVector = Vector512.Create(projection);
            i = 0;
            for (; i + W <= groupSize; i += W)
            {
                Vector512<float> g = Vector512.Load(dyg + i) * Vector512.Load(scale + i);
                Vector512.Store(g * rVector - Vector512.Load(xg + i) * projectionVector, dxg + i);
            }
            for (; i < groupSize; i++) dxg[i] = dyg[i] * scale[i] * r - xg[i] * projection;
        }
    }

    /// <summary>dx = dy·σ(x)·(1 + x·(1 − σ(x))).</summary>
    public static void SiluBackward(float* dx, float* dy, float* x, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> v = Vector512.Load(x + i);
            Vector512<float> sigmoid = Vector512<float>.One / (Vector512<float>.One + CpuVector.Exp(-v));
            Vector512<float> slope = sigmoid * Vector512.FusedMultiplyAdd(v, Vector512<float>.One - sigmoid, Vector512<float>.One);
            Vector512.Store(Vector512.Load(dy + i) * slope, dx + i);
        }
        for (; i < n; i++)
        {
            float v = x[i];
            float sigmoid = 1f / (1f + MathF.Exp(-v));
            dx[i] = dy[i] * sigmoid * (1f + v * (1f - sigmoid));
        }
    }

    /// <summary>
    /// GELU(x) = x·σ(z), z = k(x + c·x³) with k = 2√(2/π): the slope is σ(z) + x·σ(z)(1 − σ(z))·k(1 + 3c·x²), the form
    /// that the forward's sigmoid rewrite differentiates to (no tanh, no cancellation near 0).
    /// </summary>
    public static void GeluTanhBackward(float* dx, float* dy, float* x, int n)
    {
        const float TwoSqrtTwoOverPi = 1.5957691216057308f;
        const float Cubic = 0.044715f;
        var k = Vector512.Create(TwoSqrtTwoOverPi);
        var c = Vector512.Create(Cubic);
        var threeC = Vector512.Create(3f * Cubic);
        var one = Vector512<float>.One;
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> v = Vector512.Load(x + i);
            Vector512<float> square = v * v;
            Vector512<float> z = k * Vector512.FusedMultiplyAdd(c * square, v, v);
            Vector512<float> sigmoid = one / (one + CpuVector.Exp(-z));
            Vector512<float> dz = k * Vector512.FusedMultiplyAdd(threeC, square, one);
            Vector512<float> slope = Vector512.FusedMultiplyAdd(v * sigmoid * (one - sigmoid), dz, sigmoid);
            Vector512.Store(Vector512.Load(dy + i) * slope, dx + i);
        }
        for (; i < n; i++)
        {
            float v = x[i];
            float z = TwoSqrtTwoOverPi * (v + Cubic * v * v * v);
            float sigmoid = 1f / (1f + MathF.Exp(-z));
            float dz = TwoSqrtTwoOverPi * (1f + 3f * Cubic * v * v);
            dx[i] = dy[i] * (sigmoid + v * sigmoid * (1f - sigmoid) * dz);
        }
    }

    /// <summary>
    /// pe row with every 2×2 matrix [m00, m01, m10, m11] transposed to [m00, m10, m01, m11], so the forward rotation
    /// kernel applied with it computes Mᵀ·dy.
    /// </summary>
    public static void TransposeRopeMatrices(float* transposed, float* pe, int pairs)
    {
        for (int p = 0; p < pairs; p++)
        {
            transposed[4 * p] = pe[4 * p];
            transposed[4 * p + 1] = pe[4 * p + 2];
            transposed[4 * p + 2] = pe[4 * p + 1];
            transposed[4 * p + 3] = pe[4 * p + 3];
        }
    }

    /// <summary>sum[i] += x[i].</summary>
    public static void Accumulate(float* sum, float* x, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W) Vector512.Store(Vector512.Load(sum + i) + Vector512.Load(x + i), sum + i);
        for (; i < n; i++) sum[i] += x[i];
    }

    /// <summary>y[i] = sum[i] + beta·y[i], with beta = 0 not reading y.</summary>
    public static void StoreWithBeta(float* y, float* sum, float beta, int n)
    {
        if (beta == 0f)
        {
            Buffer.MemoryCopy(sum, y, (long)n * sizeof(float), (long)n * sizeof(float));
            return;
        }
        var b = Vector512.Create(beta);
        int i = 0;
        for (; i + W <= n; i += W) Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(y + i), b, Vector512.Load(sum + i)), y + i);
        for (; i < n; i++) y[i] = sum[i] + beta * y[i];
    }

    /// <summary>One row of the modulation backward: dx = dy·(1 + scale), shiftSum += dy, scaleSum += dy·x.</summary>
    public static void ModulateBackward(float* dx, float* dy, float* x, float* scale, float* shiftSum, float* scaleSum, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> g = Vector512.Load(dy + i);
            Vector512<float> v = Vector512.Load(x + i);
            Vector512.Store(Vector512.Load(shiftSum + i) + g, shiftSum + i);
            Vector512.Store(Vector512.FusedMultiplyAdd(g, v, Vector512.Load(scaleSum + i)), scaleSum + i);
            Vector512.Store(Vector512.FusedMultiplyAdd(g, Vector512.Load(scale + i), g), dx + i);
        }
        for (; i < n; i++)
        {
            float g = dy[i], v = x[i];
            shiftSum[i] += g;
            scaleSum[i] += g * v;
            dx[i] = MathF.FusedMultiplyAdd(g, scale[i], g);
        }
    }

    /// <summary>One row of the gated-residual backward: dx = dy·gate, gateSum += dy·x.</summary>
    public static void GatedResidualBackward(float* dx, float* dy, float* x, float* gate, float* gateSum, int n)
    {
        int i = 0;
        for (; i + W <= n; i += W)
        {
            Vector512<float> g = Vector512.Load(dy + i);
            Vector512.Store(Vector512.FusedMultiplyAdd(g, Vector512.Load(x + i), Vector512.Load(gateSum + i)), gateSum + i);
            Vector512.Store(g * Vector512.Load(gate + i), dx + i);
        }
        for (; i < n; i++)
        {
            float g = dy[i];
            gateSum[i] += g * x[i];
            dx[i] = g * gate[i];
        }
    }

    /// <summary>
    /// One row of the softmax backward, in place on the probability gradient: dS = P·(dP − Σ P·dP)·scale, the
    /// gradient with respect to the unscaled scores q·kᵀ.
    /// </summary>
    public static void SoftmaxBackward(float* probabilities, float* gradient, float scale, int n)
    {
        float centre = CpuVector.Dot(probabilities, gradient, n);
        var c = Vector512.Create(centre);
        var s = Vector512.Create(scale);
        int i = 0;
        for (; i + W <= n; i += W)
            Vector512.Store(Vector512.Load(probabilities + i) * (Vector512.Load(gradient + i) - c) * s, gradient + i);
        for (; i < n; i++) gradient[i] = probabilities[i] * (gradient[i] - centre) * scale;
    }

    /// <summary>Σ x² in float64: each float is widened before squaring, so large values do not overflow to Inf early.</summary>
    public static double SumOfSquares(float* x, long n)
    {
        Vector512<double> acc0 = default, acc1 = default;
        long i = 0;
        for (; i + W <= n; i += W)
        {
            (Vector512<double> low, Vector512<double> high) = Vector512.Widen(Vector512.Load(x + i));
            acc0 = Vector512.FusedMultiplyAdd(low, low, acc0);
            acc1 = Vector512.FusedMultiplyAdd(high, high, acc1);
        }
        double sum = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) sum += (double)x[i] * x[i];
        return sum;
    }

    /// <summary>
    /// torch.optim.AdamW's update on elements [start, end), in torch's order of float32 operations. The scalars are
    /// computed in float64 (as Python does) and rounded once.
    /// </summary>
    public static void AdamW(float* param, float* grad, float* m, float* v, int start, int end, in AdamWScalars s)
    {
        var decay = Vector512.Create(s.Decay);
        var weight = Vector512.Create(s.LerpWeight);
        var beta2 = Vector512.Create(s.Beta2);
        var oneMinusBeta2 = Vector512.Create(s.OneMinusBeta2);
        var sqrtCorrection = Vector512.Create(s.SqrtBiasCorrection2);
        var eps = Vector512.Create(s.Eps);
        var negativeStep = Vector512.Create(s.NegativeStepSize);
        // torch's lerp kernel: self + w·(end − self) for w < 0.5, else end − (end − self)·(1 − w); same value, other rounding.
        bool lerpFromStart = s.LerpWeight < 0.5f;
        var complement = Vector512.Create(1f - s.LerpWeight);
        int i = start;
        for (; i + W <= end; i += W)
        {
            Vector512<float> p = Vector512.Load(param + i) * decay;
            Vector512<float> g = Vector512.Load(grad + i);
            Vector512<float> mean = Vector512.Load(m + i);
            mean = lerpFromStart ? mean + weight * (g - mean) : g - (g - mean) * complement;
            Vector512<float> second = Vector512.Load(v + i) * beta2 + oneMinusBeta2 * g * g;
            Vector512<float> denominator = Vector512.Sqrt(second) / sqrtCorrection + eps;
            Vector512.Store(mean, m + i);
            Vector512.Store(second, v + i);
            Vector512.Store(p + negativeStep * mean / denominator, param + i);
        }
        for (; i < end; i++)
        {
            float p = param[i] * s.Decay;
            float g = grad[i];
            float mean = lerpFromStart ? m[i] + s.LerpWeight * (g - m[i]) : g - (g - m[i]) * (1f - s.LerpWeight);
            float second = v[i] * s.Beta2 + s.OneMinusBeta2 * g * g;
            float denominator = MathF.Sqrt(second) / s.SqrtBiasCorrection2 + s.Eps;
            m[i] = mean;
            v[i] = second;
            param[i] = p + s.NegativeStepSize * mean / denominator;
        }
    }
}

/// <summary>The float32 scalars of one AdamW step, derived in float64 the way torch derives them from Python floats.</summary>
internal readonly record struct AdamWScalars(
    float Decay, float LerpWeight, float Beta2, float OneMinusBeta2, float SqrtBiasCorrection2, float Eps, float NegativeStepSize)
{
    public static AdamWScalars For(int step, float lr, float beta1, float beta2, float eps, float weightDecay)
    {
        double biasCorrection1 = 1.0 - Math.Pow(beta1, step);
        double biasCorrection2 = 1.0 - Math.Pow(beta2, step);
        return new AdamWScalars(
            Decay: (float)(1.0 - (double)lr * weightDecay),
            LerpWeight: (float)(1.0 - beta1),
            Beta2: beta2,
            OneMinusBeta2: (float)(1.0 - beta2),
            SqrtBiasCorrection2: (float)Math.Sqrt(biasCorrection2),
            Eps: eps,
            NegativeStepSize: (float)(-(double)lr / biasCorrection1));
    }
}
