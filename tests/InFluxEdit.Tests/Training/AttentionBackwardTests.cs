using InFluxEdit.Runtime.Backends;
using InFluxEdit.Tests.Cpu;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

public class AttentionBackwardTests
{
    private const int Batch = 2;

    [Theory]
    [InlineData(1, 1, 1, 4)]
    [InlineData(3, 3, 2, 4)]
    [InlineData(5, 3, 2, 8)]  // more queries than keys
    [InlineData(1, 17, 2, 5)] // one query
    [InlineData(17, 1, 1, 3)] // one key: the softmax is constant
    [InlineData(33, 17, 2, 4)]
    public void AttentionBackward_matches_finite_differences_for_q_k_and_v(int queryRows, int keyRows, int heads, int headDim)
    {
        using var s = new CpuTestSupport(1000 + queryRows * 31 + keyRows);
        int width = heads * headDim;
        float scale = 1f / MathF.Sqrt(headDim);
        View q, k, v, dq, dk, dv;
        if (queryRows == keyRows)
        {
            // Self-attention reads q, k, v from one fused qkv and writes its gradients into one fused dqkv.
            View qkv = s.RandomTensor(Batch, queryRows, 3 * width).AsView();
            View dqkv = s.RandomTensor(Batch, queryRows, 3 * width).AsView();
            (q, k, v) = (qkv.Columns(0, width), qkv.Columns(width, width), qkv.Columns(2 * width, width));
            (dq, dk, dv) = (dqkv.Columns(0, width), dqkv.Columns(width, width), dqkv.Columns(2 * width, width));
        }
        else
        {
            q = s.RandomTensor(Batch, queryRows, width + 1).AsView().Columns(1, width);
            View kv = s.RandomTensor(Batch, keyRows, 2 * width).AsView();
            (k, v) = (kv.Columns(0, width), kv.Columns(width, width));
            dq = s.RandomTensor(Batch, queryRows, width).AsView();
            View dkv = s.RandomTensor(Batch, keyRows, 2 * width).AsView();
            (dk, dv) = (dkv.Columns(0, width), dkv.Columns(width, width));
        }
        View dOut = s.RandomTensor(Batch, queryRows + 1, width).AsView().RowRange(1, queryRows);
        double[] qs = Read(q), ks = Read(k), vs = Read(v), w = Read(dOut);
        var shape = new AttentionShape(queryRows, keyRows, heads, headDim, scale);
        double[] expectedDq = GradientCheck.Gradient(qs, x => Attention(x, ks, vs, shape), w);
        double[] expectedDk = GradientCheck.Gradient(ks, x => Attention(qs, x, vs, shape), w);
        double[] expectedDv = GradientCheck.Gradient(vs, x => Attention(qs, ks, x, shape), w);

        s.Backend.AttentionBackward(dq, dk, dv, dOut, q, k, v, heads, scale);

        GradientCheck.ShouldMatch(dq, expectedDq);
        GradientCheck.ShouldMatch(dk, expectedDk);
        GradientCheck.ShouldMatch(dv, expectedDv);
    }

    /// <summary>
    /// Lengths beyond one query block: a single head (whose query blocks are split over threads, each with its own
    /// dK/dV partial) and several heads (each thread adding block after block into dK/dV directly). Too large for
    /// finite differences, so the reference is the analytic float64 backward, itself checked against differences first.
    /// </summary>
    [Theory]
    [InlineData(1, 1, 300, 250, 16)]
    [InlineData(2, 3, 400, 130, 8)]
    public void AttentionBackward_over_many_query_blocks_matches_the_float64_backward(int batch, int heads, int queryRows, int keyRows, int headDim)
    {
        using var s = new CpuTestSupport(1100 + heads);
        float scale = 1f / MathF.Sqrt(headDim);
        int width = heads * headDim;
        View q = s.RandomTensor(-2.0, 2.0, batch, queryRows, width).AsView(), k = s.RandomTensor(-2.0, 2.0, batch, keyRows, width).AsView();
        View v = s.RandomTensor(batch, keyRows, width).AsView(), dOut = s.RandomTensor(batch, queryRows, width).AsView();
        View dq = s.RandomTensor(batch, queryRows, width).AsView(), dk = s.RandomTensor(batch, keyRows, width).AsView(), dv = s.RandomTensor(batch, keyRows, width).AsView();
        ReferenceBackwardShouldMatchFiniteDifferences(s);

        s.Backend.AttentionBackward(dq, dk, dv, dOut, q, k, v, heads, scale);

        var shape = new AttentionShape(queryRows, keyRows, heads, headDim, scale);
        (double[] expectedDq, double[] expectedDk, double[] expectedDv) = AttentionGradients(Read(q), Read(k), Read(v), Read(dOut), shape, batch);
        ShouldMatch(Read(dq), expectedDq, GradientCheck.Tolerance);
        ShouldMatch(Read(dk), expectedDk, GradientCheck.Tolerance);
        ShouldMatch(Read(dv), expectedDv, GradientCheck.Tolerance);
    }

    [Fact]
    public void Gradients_overlapping_the_inputs_are_rejected()
    {
        using var s = new CpuTestSupport(1200);
        View qkv = s.RandomTensor(1, 4, 24).AsView();
        View q = qkv.Columns(0, 8), k = qkv.Columns(8, 8), v = qkv.Columns(16, 8);
        View dOut = s.RandomTensor(1, 4, 8).AsView(), dk = s.RandomTensor(1, 4, 8).AsView(), dv = s.RandomTensor(1, 4, 8).AsView();
        Should.Throw<ArgumentException>(() => s.Backend.AttentionBackward(q, dk, dv, dOut, q, k, v, heads: 2, scale: 1f));
        Should.Throw<ArgumentException>(() => s.Backend.AttentionBackward(dk, dk, dv, dOut, q, k, v, heads: 2, scale: 1f));
    }

    private static void ReferenceBackwardShouldMatchFiniteDifferences(CpuTestSupport s)
    {
        var shape = new AttentionShape(4, 3, 2, 3, 0.7f);
        double[] q = Read(s.RandomTensor(1, 4, 6).AsView()), k = Read(s.RandomTensor(1, 3, 6).AsView());
        double[] v = Read(s.RandomTensor(1, 3, 6).AsView()), w = Read(s.RandomTensor(1, 4, 6).AsView());
        (double[] dq, double[] dk, double[] dv) = AttentionGradients(q, k, v, w, shape, batch: 1);
        ShouldMatch(dq, GradientCheck.Gradient(q, x => Attention(x, k, v, shape, batch: 1), w), 1e-7);
        ShouldMatch(dk, GradientCheck.Gradient(k, x => Attention(q, x, v, shape, batch: 1), w), 1e-7);
        ShouldMatch(dv, GradientCheck.Gradient(v, x => Attention(q, k, x, shape, batch: 1), w), 1e-7);
    }

    private readonly record struct AttentionShape(int QueryRows, int KeyRows, int Heads, int HeadDim, double Scale)
    {
        public int Width => Heads * HeadDim;
    }

    /// <summary>softmax(q·kᵀ·scale)·v per batch and head, heads head-major in the columns, in float64.</summary>
    private static double[] Attention(double[] q, double[] k, double[] v, AttentionShape a, int batch = Batch)
    {
        var o = new double[batch * a.QueryRows * a.Width];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < a.Heads; h++)
                for (int i = 0; i < a.QueryRows; i++)
                {
                    double[] p = Probabilities(q, k, a, b, h, i);
                    for (int d = 0; d < a.HeadDim; d++)
                    {
                        double sum = 0;
                        for (int j = 0; j < a.KeyRows; j++) sum += p[j] * v[(b * a.KeyRows + j) * a.Width + h * a.HeadDim + d];
                        o[(b * a.QueryRows + i) * a.Width + h * a.HeadDim + d] = sum;
                    }
                }
        return o;
    }

    private static double[] Probabilities(double[] q, double[] k, AttentionShape a, int b, int h, int i)
    {
        var p = new double[a.KeyRows];
        double max = double.NegativeInfinity, total = 0;
        for (int j = 0; j < a.KeyRows; j++)
        {
            double dot = 0;
            for (int d = 0; d < a.HeadDim; d++)
                dot += q[(b * a.QueryRows + i) * a.Width + h * a.HeadDim + d] * k[(b * a.KeyRows + j) * a.Width + h * a.HeadDim + d];
            p[j] = dot * a.Scale;
            max = Math.Max(max, p[j]);
        }
        for (int j = 0; j < a.KeyRows; j++) total += p[j] = Math.Exp(p[j] - max);
        for (int j = 0; j < a.KeyRows; j++) p[j] /= total;
        return p;
    }

    /// <summary>The textbook backward: dV = Pᵀ·dO, dS = P⊙(dO·Vᵀ − rowsum(P⊙dO·Vᵀ))·scale, dQ = dS·K, dK = dSᵀ·Q.</summary>
    private static (double[] Dq, double[] Dk, double[] Dv) AttentionGradients(double[] q, double[] k, double[] v, double[] dOut,
        AttentionShape a, int batch)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        var dp = new double[a.KeyRows];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < a.Heads; h++)
                for (int i = 0; i < a.QueryRows; i++)
                {
                    double[] p = Probabilities(q, k, a, b, h, i);
                    int queryBase = (b * a.QueryRows + i) * a.Width + h * a.HeadDim;
                    double centre = 0;
                    for (int j = 0; j < a.KeyRows; j++)
                    {
                        int keyBase = (b * a.KeyRows + j) * a.Width + h * a.HeadDim;
                        double sum = 0;
                        for (int d = 0; d < a.HeadDim; d++)
                        {
                            sum += dOut[queryBase + d] * v[keyBase + d];
                            dv[keyBase + d] += p[j] * dOut[queryBase + d];
                        }
                        dp[j] = sum;
                        centre += p[j] * sum;
                    }
                    for (int j = 0; j < a.KeyRows; j++)
                    {
                        int keyBase = (b * a.KeyRows + j) * a.Width + h * a.HeadDim;
                        double ds = p[j] * (dp[j] - centre) * a.Scale;
                        for (int d = 0; d < a.HeadDim; d++)
                        {
                            dq[queryBase + d] += ds * k[keyBase + d];
                            dk[keyBase + d] += ds * q[queryBase + d];
                        }
                    }
                }
        return (dq, dk, dv);
    }
}
