using InFluxEdit.Runtime.Backends;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Cpu;

public class CpuAttentionTests
{
    [Theory]
    [InlineData(1, 1, 2, 8)]
    [InlineData(7, 7, 3, 16)]
    [InlineData(300, 300, 2, 64)]
    [InlineData(5, 300, 2, 24)]   // a few queries: the small-row GEMM path
    [InlineData(300, 7, 3, 20)]   // many queries over few keys
    [InlineData(130, 1, 1, 40)]
    [InlineData(30, 2100, 1, 64)] // packed keys beyond L2: key panels become the outer loop
    public void Attention_matches_float64_softmax_over_strided_head_columns(int queryRows, int keyRows, int heads, int headDim)
    {
        using var s = new CpuTestSupport(queryRows * 7 + keyRows);
        const int batch = 2;
        int width = heads * headDim;
        // q comes from one tensor, k and v from a fused [k | v] tensor with a gap, o is a column slice of a wider one.
        View q = s.RandomTensor(batch, queryRows, width + 3).AsView().Columns(3, width);
        View kv = s.RandomTensor(batch, keyRows, 2 * width + 1).AsView();
        View k = kv.Columns(0, width), v = kv.Columns(width + 1, width);
        View o = s.RandomTensor(batch, queryRows, width + 2).AsView().Columns(1, width);
        float scale = 1f / MathF.Sqrt(headDim);
        double[][][] qs = Snapshot(q), ks = Snapshot(k), vs = Snapshot(v);

        s.Backend.Attention(o, q, k, v, heads, scale);

        var expected = AttentionReference.Compute(batch, heads, headDim, queryRows, keyRows, scale,
            (b, r, c) => qs[b][r][c], (b, r, c) => ks[b][r][c], (b, r, c) => vs[b][r][c]);
        ShouldMatch(Read(o), expected, 1e-5);
    }

    [Fact]
    public void Large_scores_do_not_overflow_the_softmax()
    {
        using var s = new CpuTestSupport(5);
        View q = s.RandomTensor(30.0, 40.0, 1, 9, 16).AsView();
        View k = s.RandomTensor(30.0, 40.0, 1, 9, 16).AsView();
        View v = s.RandomTensor(1, 9, 16).AsView();
        View o = s.RandomTensor(1, 9, 16).AsView();
        s.Backend.Attention(o, q, k, v, heads: 1, scale: 1f);
        foreach (double value in Read(o))
        {
            double.IsFinite(value).ShouldBeTrue();
            Math.Abs(value).ShouldBeLessThanOrEqualTo(1.0 + 1e-6);
        }
    }

    [Fact]
    public void Mismatched_heads_and_rows_are_rejected()
    {
        using var s = new CpuTestSupport(6);
        View q = s.RandomTensor(1, 4, 12).AsView(), k = s.RandomTensor(1, 5, 12).AsView(), v = s.RandomTensor(1, 6, 12).AsView();
        Should.Throw<ArgumentException>(() => s.Backend.Attention(q, q, k, k, heads: 5, scale: 1f));
        Should.Throw<ArgumentException>(() => s.Backend.Attention(q, q, k, v, heads: 2, scale: 1f));
    }
}
