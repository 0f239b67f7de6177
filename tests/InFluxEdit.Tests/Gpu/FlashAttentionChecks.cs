using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Flash attention (forward and backward) on a backend against a float64 reference computed from the SAME
/// bf16-rounded q, k, v and dO the kernels multiply. What is left is the rounding the algorithm itself does: the
/// probabilities (and, in the backward, dS) are rounded to bf16 (relative error ≤ 2⁻⁹) before their products, and
/// the backward's rowsum(dO∘O) uses an output that carries the forward's error. Each element's tolerance is that
/// bound computed from the reference's own magnitudes, doubled, plus 1e-5 for float32 accumulation: a wrong
/// fragment, tile edge or mask gives errors of the order of the values themselves.
/// </summary>
public sealed class FlashAttentionChecks(IlgpuBackend backend, int seed = 2024)
{
    private const double RoundingBound = 2.0 / 512;
    private const double Accumulation = 1e-5;
    private readonly GpuOpChecks views = new(backend, seed);

    public static double Bf16(double value) => HalfWords.BFloat16ToFloat(HalfWords.FloatToBFloat16((float)value));

    /// <summary>
    /// Self-attention (Lq = Lk) takes q, k, v as column slices of one fused [batch, L, 3·width] tensor, as FLUX does;
    /// cross-attention takes q from one strided tensor and k, v from slices of another. o is a column slice too.
    /// </summary>
    public void Forward(int batch, int heads, int headDim, int queryRows, int keyRows, bool bias, bool causal, float spread = 1.5f)
    {
        var inputs = Inputs(batch, heads, headDim, queryRows, keyRows, spread);
        int width = heads * headDim;
        var (oWide, oBacking) = views.StridedInput(batch, queryRows, width + 5);
        var o = oWide.Columns(3, width);
        float scale = 1f / MathF.Sqrt(headDim);
        double[]? biasHost = null;
        DeviceTensor? biasTensor = null;
        if (bias)
        {
            var backing = views.RandomBacking(heads * queryRows * keyRows, scale: 2f);
            biasHost = Array.ConvertAll(backing.Host, x => (double)x);
            biasTensor = backing.Device;
        }
        try
        {
            View? biasView = null;
            if (biasTensor is not null)
                biasView = new View(biasTensor, 0, heads, queryRows, keyRows, (long)queryRows * keyRows, keyRows);
            if (bias || causal)
                backend.MaskedAttention(o, inputs.Q, inputs.K, inputs.V, heads, scale, biasView, causal);
            else
                backend.Attention(o, inputs.Q, inputs.K, inputs.V, heads, scale);
            Assert.Equal("flash", backend.LastAttentionPath);
            var actual = views.ReadBack(o);
            var reference = new Reference(inputs, batch, heads, headDim, queryRows, keyRows, scale, biasHost, causal);
            string what = $"flash forward B{batch} H{heads} D{headDim} Lq{queryRows} Lk{keyRows}{(bias ? " bias" : "")}{(causal ? " causal" : "")}";
            AssertWithin(reference.Output, reference.OutputBound, actual, what);
        }
        finally
        {
            biasTensor?.Dispose();
            oBacking.Device.Dispose();
            inputs.Dispose();
        }
    }

    public void Backward(int batch, int heads, int headDim, int queryRows, int keyRows, float spread = 1.5f)
    {
        var inputs = Inputs(batch, heads, headDim, queryRows, keyRows, spread);
        int width = heads * headDim;
        var (dOut, dOutBacking) = views.StridedInput(batch, queryRows, width);
        var (dqWide, dqBacking) = views.StridedInput(batch, queryRows, width + 2);
        // The op asks its three outputs to be disjoint spans of memory: dk and dv in tensors of their own.
        var (dkWide, dkBacking) = views.StridedInput(batch, keyRows, width + 4);
        var (dv, dvBacking) = views.StridedInput(batch, keyRows, width);
        View dq = dqWide.Columns(1, width), dk = dkWide.Columns(4, width);
        float scale = 1f / MathF.Sqrt(headDim);
        try
        {
            backend.AttentionBackward(dq, dk, dv, dOut, inputs.Q, inputs.K, inputs.V, heads, scale);
            Assert.Equal("flash", backend.LastAttentionBackwardPath);
            var reference = new Reference(inputs, batch, heads, headDim, queryRows, keyRows, scale, null, false);
            var gradients = reference.Gradients((b, r, c) => Bf16(GpuOpChecks.At(dOut, dOutBacking.Host, b, r, c)));
            string what = $"flash backward B{batch} H{heads} D{headDim} Lq{queryRows} Lk{keyRows}";
            AssertWithin(gradients.Dq, gradients.DqBound, views.ReadBack(dq), what + " dq");
            AssertWithin(gradients.Dk, gradients.DkBound, views.ReadBack(dk), what + " dk");
            AssertWithin(gradients.Dv, gradients.DvBound, views.ReadBack(dv), what + " dv");
        }
        finally
        {
            dOutBacking.Device.Dispose();
            dqBacking.Device.Dispose();
            dkBacking.Device.Dispose();
            dvBacking.Device.Dispose();
            inputs.Dispose();
        }
    }

    public static void AssertWithin(double[] expected, double[] bound, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(expected[i] - actual[i]);
            if (!(error <= bound[i] + Accumulation))
                Assert.Fail($"{what}: element {i} is {actual[i]}, expected {expected[i]} (error {error:E2}, bound {bound[i] + Accumulation:E2})");
        }
    }

    /// <summary>q, k, v as views with their host copies (rounded to bf16 when read through <see cref="Q"/> etc.).</summary>
    public sealed record AttentionInputs(View Q, View K, View V, GpuOpChecks.Backing QBacking, GpuOpChecks.Backing KvBacking) : IDisposable
    {
        public double QAt(int b, int r, int c) => Bf16(GpuOpChecks.At(Q, QBacking.Host, b, r, c));
        public double KAt(int b, int r, int c) => Bf16(GpuOpChecks.At(K, KvBacking.Host, b, r, c));
        public double VAt(int b, int r, int c) => Bf16(GpuOpChecks.At(V, KvBacking.Host, b, r, c));

        public void Dispose()
        {
            QBacking.Device.Dispose();
            if (!ReferenceEquals(QBacking, KvBacking)) KvBacking.Device.Dispose();
        }
    }

    public AttentionInputs Inputs(int batch, int heads, int headDim, int queryRows, int keyRows, float spread)
    {
        int width = heads * headDim;
        if (queryRows == keyRows)
        {
            var (qkv, backing) = views.StridedInput(batch, queryRows, 3 * width, scale: spread);
            return new AttentionInputs(qkv.Columns(0, width), qkv.Columns(width, width), qkv.Columns(2 * width, width), backing, backing);
        }
        var (q, qBacking) = views.StridedInput(batch, queryRows, width, scale: spread);
        var (kv, kvBacking) = views.StridedInput(batch, keyRows, 2 * width, scale: spread);
        return new AttentionInputs(q, kv.Columns(0, width), kv.Columns(width, width), qBacking, kvBacking);
    }

    /// <summary>Attention in float64 from the bf16-rounded inputs, with each output's rounding bound.</summary>
    public sealed class Reference
    {
        private readonly AttentionInputs inputs;
        private readonly int batch, heads, headDim, queryRows, keyRows, width;
        private readonly double scale;

        /// <summary>P[b, h, i, j], row-major.</summary>
        private readonly double[] probabilities;

        public double[] Output { get; }
        public double[] OutputBound { get; }

        public Reference(AttentionInputs inputs, int batch, int heads, int headDim, int queryRows, int keyRows,
            double scale, double[]? bias, bool causal)
        {
            this.inputs = inputs;
            (this.batch, this.heads, this.headDim, this.queryRows, this.keyRows, this.scale) = (batch, heads, headDim, queryRows, keyRows, scale);
            width = heads * headDim;
            probabilities = new double[batch * heads * queryRows * keyRows];
            Output = new double[batch * queryRows * width];
            OutputBound = new double[Output.Length];
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < queryRows; i++)
                    {
                        var p = probabilities.AsSpan(((b * heads + h) * queryRows + i) * keyRows, keyRows);
                        double max = double.NegativeInfinity;
                        for (int j = 0; j < keyRows; j++)
                        {
                            double dot = 0;
                            for (int d = 0; d < headDim; d++) dot += inputs.QAt(b, i, h * headDim + d) * inputs.KAt(b, j, h * headDim + d);
                            p[j] = causal && j > i ? double.NegativeInfinity : dot * scale + (bias?[(h * queryRows + i) * keyRows + j] ?? 0);
                            max = Math.Max(max, p[j]);
                        }
                        double total = 0;
                        for (int j = 0; j < keyRows; j++) total += p[j] = Math.Exp(p[j] - max);
                        for (int j = 0; j < keyRows; j++) p[j] /= total;
                        for (int d = 0; d < headDim; d++)
                        {
                            double sum = 0, magnitude = 0;
                            for (int j = 0; j < keyRows; j++)
                            {
                                double value = inputs.VAt(b, j, h * headDim + d);
                                sum += p[j] * value;
                                magnitude += p[j] * Math.Abs(value);
                            }
                            int index = (b * queryRows + i) * width + h * headDim + d;
                            Output[index] = sum;
                            OutputBound[index] = RoundingBound * magnitude;
                        }
                    }
        }

        private double P(int b, int h, int i, int j) => probabilities[((b * heads + h) * queryRows + i) * keyRows + j];

        public sealed record Gradient(double[] Dq, double[] DqBound, double[] Dk, double[] DkBound, double[] Dv, double[] DvBound);

        /// <summary>dq, dk, dv of Σ dO∘O (unmasked attention) and their bounds.</summary>
        public Gradient Gradients(Func<int, int, int, double> dOut)
        {
            var dq = new double[batch * queryRows * width];
            var dqBound = new double[dq.Length];
            var dk = new double[batch * keyRows * width];
            var dkBound = new double[dk.Length];
            var dv = new double[dk.Length];
            var dvBound = new double[dk.Length];
            var dS = new double[queryRows * keyRows];
            // Bound on |dS − computed dS|: P·(the error rowsum(dO∘O) inherits from O) + dS's own bf16 rounding.
            var dSError = new double[queryRows * keyRows];
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                {
                    int c0 = h * headDim;
                    for (int i = 0; i < queryRows; i++)
                    {
                        double rowDot = 0, rowDotError = 0;
                        for (int d = 0; d < headDim; d++)
                        {
                            int index = (b * queryRows + i) * width + c0 + d;
                            rowDot += dOut(b, i, c0 + d) * Output[index];
                            rowDotError += Math.Abs(dOut(b, i, c0 + d)) * OutputBound[index];
                        }
                        for (int j = 0; j < keyRows; j++)
                        {
                            double dp = 0;
                            for (int d = 0; d < headDim; d++) dp += dOut(b, i, c0 + d) * inputs.VAt(b, j, c0 + d);
                            double p = P(b, h, i, j);
                            dS[i * keyRows + j] = p * (dp - rowDot);
                            dSError[i * keyRows + j] = p * rowDotError + RoundingBound * Math.Abs(dS[i * keyRows + j]);
                        }
                    }
                    for (int d = 0; d < headDim; d++)
                    {
                        for (int i = 0; i < queryRows; i++)
                        {
                            double sum = 0, error = 0;
                            for (int j = 0; j < keyRows; j++)
                            {
                                double key = inputs.KAt(b, j, c0 + d);
                                sum += dS[i * keyRows + j] * key;
                                error += dSError[i * keyRows + j] * Math.Abs(key);
                            }
                            int index = (b * queryRows + i) * width + c0 + d;
                            dq[index] = scale * sum;
                            dqBound[index] = scale * error;
                        }
                        for (int j = 0; j < keyRows; j++)
                        {
                            double keySum = 0, keyError = 0, valueSum = 0, valueMagnitude = 0;
                            for (int i = 0; i < queryRows; i++)
                            {
                                double query = inputs.QAt(b, i, c0 + d), gradient = dOut(b, i, c0 + d), p = P(b, h, i, j);
                                keySum += dS[i * keyRows + j] * query;
                                keyError += dSError[i * keyRows + j] * Math.Abs(query);
                                valueSum += p * gradient;
                                valueMagnitude += p * Math.Abs(gradient);
                            }
                            int index = (b * keyRows + j) * width + c0 + d;
                            dk[index] = scale * keySum;
                            dkBound[index] = scale * keyError;
                            dv[index] = valueSum;
                            dvBound[index] = RoundingBound * valueMagnitude;
                        }
                    }
                }
            return new Gradient(dq, dqBound, dk, dkBound, dv, dvBound);
        }
    }
}
