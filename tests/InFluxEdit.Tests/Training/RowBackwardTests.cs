using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Tests.Cpu;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

/// <summary>Backward kernels of the row-wise forward ops, each against finite differences of a float64 forward.</summary>
public class RowBackwardTests
{
    private const int Batch = 2, Rows = 3;

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(17, true)]
    [InlineData(33, false)]
    [InlineData(300, true)]
    public void LayerNormBackward_matches_finite_differences(int cols, bool inPlace)
    {
        using var s = new CpuTestSupport(100 + cols);
        const float eps = 1e-6f;
        // Rows far from zero exercise the recomputed mean; a row range and a column slice exercise the strides.
        View x = s.RandomTensor(2.0, 4.0, Batch, Rows + 2, cols).AsView().RowRange(1, Rows);
        View dy = s.RandomTensor(Batch, Rows, cols + 4).AsView().Columns(4, cols);
        View dx = inPlace ? dy : s.RandomTensor(Batch, Rows, cols).AsView();
        double[] expected = GradientCheck.Gradient(Read(x), v => LayerNorm(v, cols, eps), Read(dy));

        s.Backend.LayerNormBackward(dx, dy, x, eps);

        GradientCheck.ShouldMatch(dx, expected);
    }

    [Theory]
    [InlineData(3, 16, false)]
    [InlineData(2, 17, true)]
    [InlineData(1, 33, false)]
    [InlineData(2, 3, false)]
    public void RmsNormBackward_matches_finite_differences_on_a_fused_qkv_slice(int heads, int groupSize, bool inPlace)
    {
        using var s = new CpuTestSupport(200 + heads * groupSize);
        const float eps = 1e-6f;
        int width = heads * groupSize;
        // q's columns of a fused [q | k | v] row, as QK-norm reads them.
        View x = s.RandomTensor(Batch, Rows, 3 * width).AsView().Columns(width, width);
        var scale = s.RandomTensor(0.5, 1.5, groupSize);
        View dy = s.RandomTensor(Batch, Rows, width).AsView();
        View dx = inPlace ? dy : s.RandomTensor(Batch, Rows, 3 * width).AsView().Columns(0, width);
        double[] scales = Read(View.Of(scale));
        double[] expected = GradientCheck.Gradient(Read(x), v => RmsNorm(v, scales, groupSize, eps), Read(dy));

        s.Backend.RmsNormBackward(dx, dy, x, scale, groupSize, eps);

        GradientCheck.ShouldMatch(dx, expected);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, true)]
    [InlineData(17, false)]
    [InlineData(33, true)]
    public void SiluBackward_matches_finite_differences(int cols, bool inPlace)
    {
        using var s = new CpuTestSupport(300 + cols);
        View x = s.RandomTensor(-8.0, 8.0, Batch, Rows, cols + 1).AsView().Columns(1, cols);
        View dy = s.RandomTensor(Batch, Rows, cols).AsView();
        View dx = inPlace ? dy : s.RandomTensor(Batch, Rows, cols).AsView();
        double[] expected = GradientCheck.Gradient(Read(x), v => v.Select(a => a / (1 + Math.Exp(-a))).ToArray(), Read(dy));

        s.Backend.SiluBackward(dx, dy, x);

        GradientCheck.ShouldMatch(dx, expected);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, true)]
    [InlineData(17, false)]
    [InlineData(33, true)]
    public void GeluTanhBackward_matches_finite_differences(int cols, bool inPlace)
    {
        using var s = new CpuTestSupport(400 + cols);
        View x = s.RandomTensor(-5.0, 5.0, Batch, Rows, cols + 1).AsView().Columns(1, cols);
        View dy = s.RandomTensor(Batch, Rows, cols).AsView();
        View dx = inPlace ? dy : s.RandomTensor(Batch, Rows, cols).AsView();
        double[] expected = GradientCheck.Gradient(Read(x), v => v.Select(GeluTanh).ToArray(), Read(dy));

        s.Backend.GeluTanhBackward(dx, dy, x);

        GradientCheck.ShouldMatch(dx, expected);
    }

    [Fact]
    public void Activation_gradients_stay_finite_where_the_sigmoid_saturates()
    {
        using var s = new CpuTestSupport(450);
        float[] inputs = { -200f, -40f, -20f, 20f, 40f, 200f, -200f, -40f, -20f, 20f, 40f, 200f, -90f, 90f, 0f, 1f, -1f };
        var x = (CpuTensor)s.Backend.Allocate(new[] { 1, inputs.Length });
        inputs.CopyTo(x.Span);
        var dy = (CpuTensor)s.Backend.Allocate(new[] { 1, inputs.Length });
        dy.Span.Fill(1f);
        var dx = (CpuTensor)s.Backend.Allocate(new[] { 1, inputs.Length });
        foreach (bool gelu in new[] { false, true })
        {
            if (gelu) s.Backend.GeluTanhBackward(dx, dy, x);
            else s.Backend.SiluBackward(dx, dy, x);
            for (int i = 0; i < inputs.Length; i++)
            {
                double expected = GradientCheck.Gradient(new double[] { inputs[i] },
                    v => new[] { gelu ? GeluTanh(v[0]) : v[0] / (1 + Math.Exp(-v[0])) }, new[] { 1.0 })[0];
                dx.Span[i].ShouldBe((float)expected, 1e-5, $"{(gelu ? "GELU" : "SiLU")}'({inputs[i]})");
            }
        }
    }

    [Theory]
    [InlineData(2, 4, false)]
    [InlineData(3, 6, true)]
    [InlineData(1, 34, false)]
    public void ApplyRopeBackward_is_the_transposed_matrix_of_each_pair(int heads, int headDim, bool inPlace)
    {
        using var s = new CpuTestSupport(500 + heads * headDim);
        int width = heads * headDim;
        // General 2×2 matrices rather than rotations, so a kernel that applied M instead of Mᵀ would fail.
        View pe = s.RandomTensor(Batch, Rows, 2 * headDim).AsView();
        View dy = s.RandomTensor(Batch, Rows, 3 * width).AsView().Columns(width, width);
        View dx = inPlace ? dy : s.RandomTensor(Batch, Rows, width).AsView();
        double[] matrices = Read(pe);
        double[] expected = GradientCheck.Gradient(Read(s.RandomTensor(Batch, Rows, width).AsView()),
            v => Rope(v, matrices, heads, headDim), Read(dy));

        s.Backend.ApplyRopeBackward(dx, dy, pe, headDim);

        GradientCheck.ShouldMatch(dx, expected);
    }

    private static double[] LayerNorm(double[] x, int cols, double eps)
    {
        var y = new double[x.Length];
        for (int row = 0; row < x.Length / cols; row++)
        {
            var values = x.AsSpan(row * cols, cols);
            double mean = 0, variance = 0;
            foreach (double v in values) mean += v;
            mean /= cols;
            foreach (double v in values) variance += (v - mean) * (v - mean);
            variance /= cols;
            for (int c = 0; c < cols; c++) y[row * cols + c] = (values[c] - mean) / Math.Sqrt(variance + eps);
        }
        return y;
    }

    private static double[] RmsNorm(double[] x, double[] scale, int groupSize, double eps)
    {
        var y = new double[x.Length];
        for (int group = 0; group < x.Length / groupSize; group++)
        {
            double meanSquare = 0;
            for (int i = 0; i < groupSize; i++) meanSquare += x[group * groupSize + i] * x[group * groupSize + i];
            double r = 1 / Math.Sqrt(meanSquare / groupSize + eps);
            for (int i = 0; i < groupSize; i++) y[group * groupSize + i] = x[group * groupSize + i] * r * scale[i];
        }
        return y;
    }

    private static double GeluTanh(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    /// <summary>y = M·x per interleaved pair, M = [m00, m01, m10, m11] from the token's pe row, shared by all heads.</summary>
    private static double[] Rope(double[] x, double[] pe, int heads, int headDim)
    {
        int width = heads * headDim;
        var y = new double[x.Length];
        for (int token = 0; token < x.Length / width; token++)
            for (int h = 0; h < heads; h++)
                for (int p = 0; p < headDim / 2; p++)
                {
                    int i = token * width + h * headDim + 2 * p;
                    int m = token * 2 * headDim + 4 * p;
                    y[i] = pe[m] * x[i] + pe[m + 1] * x[i + 1];
                    y[i + 1] = pe[m + 2] * x[i] + pe[m + 3] * x[i + 1];
                }
        return y;
    }
}
