using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Tests.Cpu;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

/// <summary>The optimiser step and the reductions around it (gradient norm, clipping).</summary>
public class OptimizerOpTests
{
    [Theory]
    [InlineData(37, 0.9f)]
    [InlineData(1000, 0.9f)]
    [InlineData(37, 0.3f)] // beta1 < 0.5: torch's lerp takes its other branch
    public void AdamWStep_follows_torch_over_three_steps(int length, float beta1)
    {
        using var s = new CpuTestSupport(1300 + length);
        const float lr = 1e-2f, beta2 = 0.999f, eps = 1e-8f, weightDecay = 0.1f;
        var param = s.RandomTensor(length);
        var grad = s.RandomTensor(length);
        var m = (CpuTensor)s.Backend.Allocate(new[] { length });
        var v = (CpuTensor)s.Backend.Allocate(new[] { length });
        m.Span.Clear();
        v.Span.Clear();
        double[] p64 = Read(View.Of(param)), m64 = new double[length], v64 = new double[length];

        for (int step = 1; step <= 3; step++)
        {
            // A fresh gradient each step; the float64 state follows torch's update of the same float32 gradient.
            Span<float> g = grad.Span;
            for (int i = 0; i < length; i++) g[i] = (float)(s.NextDouble() * 2 - 1) * (i % 3 + 1);
            double[] before = Read(View.Of(param));
            TorchAdamW(p64, Read(View.Of(grad)), m64, v64, step, lr, beta1, beta2, eps, weightDecay);

            s.Backend.AdamWStep(param, grad, m, v, step, lr, beta1, beta2, eps, weightDecay);

            // The update itself (not just the parameter, which hardly moves) must match.
            double[] after = Read(View.Of(param));
            double[] update = after.Select((x, i) => x - before[i]).ToArray();
            double[] expectedUpdate = p64.Select((x, i) => x - before[i]).ToArray();
            ShouldMatch(update, expectedUpdate, 1e-4);
            ShouldMatch(Read(View.Of(m)), m64, 1e-6);
            ShouldMatch(Read(View.Of(v)), v64, 1e-6);
            // Carry on from the float32 parameters the kernel produced, as the next step would.
            Array.Copy(after, p64, length);
        }
    }

    [Fact]
    public void SumOfSquares_accumulates_in_float64_over_strided_and_contiguous_views()
    {
        using var s = new CpuTestSupport(1400);
        View contiguous = s.RandomTensor(3, 300, 333).AsView();
        View strided = s.RandomTensor(3, 301, 40).AsView().RowRange(1, 300).Columns(3, 33);
        foreach (View x in new[] { contiguous, strided })
        {
            double expected = Read(x).Sum(value => value * value);
            s.Backend.SumOfSquares(x).ShouldBe(expected, expected * 1e-12);
        }

        // Many views at once: the sum of them all.
        double both = Read(contiguous).Sum(value => value * value) + Read(strided).Sum(value => value * value);
        s.Backend.SumOfSquares(contiguous, strided, strided.RowRange(0, 0)).ShouldBe(both, both * 1e-12);
        s.Backend.SumOfSquares().ShouldBe(0);

        // Squares beyond float32's range still add up: 2·(1e30)² is finite in float64.
        var large = (CpuTensor)s.Backend.Allocate(new[] { 2, 17 });
        large.Span.Clear();
        large.Span[0] = 1e30f;
        large.Span[33] = -1e30f;
        s.Backend.SumOfSquares(large).ShouldBe(2.0 * (double)1e30f * 1e30f, 1e47);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void SumOfSquares_propagates_a_non_finite_gradient(float poison)
    {
        using var s = new CpuTestSupport(1500);
        foreach (int position in new[] { 0, 7, 4999 })
        {
            var x = s.RandomTensor(50, 100);
            x.Span[position] = poison;
            double sum = s.Backend.SumOfSquares(x);
            if (float.IsNaN(poison)) double.IsNaN(sum).ShouldBeTrue();
            else sum.ShouldBe(double.PositiveInfinity);
            // A strided view sees the poison only if it covers the position (column 99 lies outside this one).
            double stridedSum = s.Backend.SumOfSquares(x.AsView().Columns(0, 99));
            if (position % 100 == 99) double.IsFinite(stridedSum).ShouldBeTrue();
            else stridedSum.ShouldBe(sum);
        }
    }

    [Fact]
    public void Scale_multiplies_the_view_and_nothing_else()
    {
        using var s = new CpuTestSupport(1600);
        var tensor = s.RandomTensor(2, 5, 40);
        View inside = tensor.AsView().RowRange(1, 3).Columns(2, 33);
        double[] before = Read(tensor.AsView()), insideBefore = Read(inside);
        s.Backend.Scale(inside, -0.25f);
        ShouldMatch(Read(inside), insideBefore.Select(x => -0.25 * x).ToArray(), 1e-7);
        double[] after = Read(tensor.AsView());
        int changed = after.Where((x, i) => x != before[i]).Count();
        changed.ShouldBe(2 * 3 * 33);

        var whole = s.RandomTensor(3, 1000);
        double[] wholeBefore = Read(whole.AsView());
        s.Backend.Scale(whole, 3f);
        ShouldMatch(Read(whole.AsView()), wholeBefore.Select(x => 3 * x).ToArray(), 1e-7);
    }

    /// <summary>torch.optim.AdamW (_single_tensor_adam with decoupled weight decay), in float64.</summary>
    private static void TorchAdamW(double[] param, double[] grad, double[] m, double[] v, int step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        double biasCorrection1 = 1 - Math.Pow(beta1, step), biasCorrection2 = 1 - Math.Pow(beta2, step);
        for (int i = 0; i < param.Length; i++)
        {
            param[i] *= 1 - lr * weightDecay;
            m[i] = beta1 * m[i] + (1 - beta1) * grad[i];
            v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i];
            double denominator = Math.Sqrt(v[i]) / Math.Sqrt(biasCorrection2) + eps;
            param[i] -= lr / biasCorrection1 * m[i] / denominator;
        }
    }
}
