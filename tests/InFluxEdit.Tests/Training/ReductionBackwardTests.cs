using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Tests.Cpu;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// Backward kernels whose gradients sum over rows: modulation and gates (per-sample vectors broadcast over a sequence)
/// and plain row sums (bias gradients).
/// </summary>
public class ReductionBackwardTests
{
    private const int Batch = 2;

    [Theory]
    [InlineData(1, 1, false)]
    [InlineData(5, 3, true)]
    [InlineData(3, 17, false)]
    [InlineData(5, 33, true)]
    [InlineData(4, 100, false)]
    public void ModulateBackward_matches_finite_differences_for_x_shift_and_scale(int rows, int cols, bool inPlace)
    {
        using var s = new CpuTestSupport(600 + rows * cols);
        // shift and scale are chunks of one modulation output [1, B, 3C], broadcast over the rows as the forward reads them.
        View modulation = s.RandomTensor(Batch, 3 * cols).AsView();
        View shift = modulation.Columns(0, cols), scale = modulation.Columns(cols, cols);
        View x = s.RandomTensor(Batch, rows + 1, cols).AsView().RowRange(1, rows);
        View dy = s.RandomTensor(Batch, rows, cols).AsView();
        View dx = inPlace ? dy : s.RandomTensor(Batch, rows, cols + 2).AsView().Columns(2, cols);
        // The vector gradients land in chunks of one gradient tensor for the modulation output.
        View dModulation = s.RandomTensor(Batch, 3 * cols).AsView();
        View dShift = dModulation.Columns(0, cols), dScale = dModulation.Columns(cols, cols);
        double[] xs = Read(x), shifts = Read(shift), scales = Read(scale), w = Read(dy);
        double[] expectedDx = GradientCheck.Gradient(xs, v => Modulate(v, shifts, scales, rows, cols), w);
        double[] expectedDShift = GradientCheck.Gradient(shifts, v => Modulate(xs, v, scales, rows, cols), w);
        double[] expectedDScale = GradientCheck.Gradient(scales, v => Modulate(xs, shifts, v, rows, cols), w);
        double[] untouchedGate = Read(dModulation.Columns(2 * cols, cols));

        s.Backend.ModulateBackward(dx, dShift, dScale, dy, x, scale.BroadcastRows(rows));

        GradientCheck.ShouldMatch(dx, expectedDx);
        GradientCheck.ShouldMatch(dShift, expectedDShift);
        GradientCheck.ShouldMatch(dScale, expectedDScale);
        Read(dModulation.Columns(2 * cols, cols)).ShouldBe(untouchedGate);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(5, 3)]
    [InlineData(3, 17)]
    [InlineData(5, 33)]
    [InlineData(7, 100)]
    public void GatedResidualBackward_matches_finite_differences_and_leaves_the_residual_gradient_alone(int rows, int cols)
    {
        using var s = new CpuTestSupport(700 + rows * cols);
        View gate = s.RandomTensor(Batch, 3 * cols).AsView().Columns(2 * cols, cols);
        View x = s.RandomTensor(Batch, rows, cols + 3).AsView().Columns(3, cols);
        View residual = s.RandomTensor(Batch, rows, cols).AsView();
        View dy = s.RandomTensor(Batch, rows, cols).AsView();
        View dx = s.RandomTensor(Batch, rows, cols).AsView();
        View dGate = s.RandomTensor(Batch, cols).AsView();
        double[] xs = Read(x), gates = Read(gate), residuals = Read(residual), w = Read(dy);
        double[] expectedDx = GradientCheck.Gradient(xs, v => GatedResidual(residuals, v, gates, rows, cols), w);
        double[] expectedDGate = GradientCheck.Gradient(gates, v => GatedResidual(residuals, xs, v, rows, cols), w);
        double[] expectedDResidual = GradientCheck.Gradient(residuals, v => GatedResidual(v, xs, gates, rows, cols), w);

        s.Backend.GatedResidualBackward(dx, dGate, dy, x, gate.BroadcastRows(rows));

        GradientCheck.ShouldMatch(dx, expectedDx);
        GradientCheck.ShouldMatch(dGate, expectedDGate);
        // The residual's gradient is dy itself, which the caller keeps: the kernel must not have written it.
        GradientCheck.ShouldMatch(dy, expectedDResidual);
    }

    [Fact]
    public void GatedResidualBackward_may_write_dx_over_x()
    {
        using var s = new CpuTestSupport(750);
        const int rows = 4, cols = 33;
        View gate = s.RandomTensor(Batch, cols).AsView();
        View x = s.RandomTensor(Batch, rows, cols).AsView();
        View dy = s.RandomTensor(Batch, rows, cols).AsView();
        View dGate = s.RandomTensor(Batch, cols).AsView();
        double[] xs = Read(x), gates = Read(gate), w = Read(dy), zeros = new double[xs.Length];
        double[] expectedDx = GradientCheck.Gradient(xs, v => GatedResidual(zeros, v, gates, rows, cols), w);
        double[] expectedDGate = GradientCheck.Gradient(gates, v => GatedResidual(zeros, xs, v, rows, cols), w);

        s.Backend.GatedResidualBackward(x, dGate, dy, x, gate.BroadcastRows(rows));

        GradientCheck.ShouldMatch(x, expectedDx);
        GradientCheck.ShouldMatch(dGate, expectedDGate);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(33, 3)]
    [InlineData(300, 70)]
    [InlineData(5, 5000)] // more columns than one chunk holds
    public void SumRows_sums_each_batch_or_all_of_them(int rows, int cols)
    {
        using var s = new CpuTestSupport(800 + rows + cols);
        View x = s.RandomTensor(Batch, rows + 2, cols + 1).AsView().RowRange(2, rows).Columns(1, cols);
        double[][][] xs = Snapshot(x);

        // Per batch, assigned over NaN (beta = 0 must not read y).
        View perBatch = s.RandomTensor(Batch, 1, cols).AsView();
        FillWithNaN((CpuTensor)perBatch.Tensor);
        s.Backend.SumRows(perBatch, x, beta: 0f);
        var expected = new double[Batch * cols];
        for (int b = 0; b < Batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) expected[b * cols + c] += xs[b][r][c];
        ShouldMatch(Read(perBatch), expected, 1e-6);

        // Over the whole batch, accumulated (a bias gradient, +=).
        View bias = s.RandomTensor(1, 1, cols).AsView();
        double[] before = Read(bias);
        s.Backend.SumRows(bias, x, beta: 1f);
        var expectedBias = new double[cols];
        for (int c = 0; c < cols; c++) expectedBias[c] = before[c] + expected[c] + expected[cols + c];
        ShouldMatch(Read(bias), expectedBias, 1e-6);
    }

    [Fact]
    public void A_per_sample_gradient_of_the_wrong_shape_is_rejected()
    {
        using var s = new CpuTestSupport(900);
        View x = s.RandomTensor(Batch, 3, 8).AsView(), dy = s.RandomTensor(Batch, 3, 8).AsView(), dx = s.RandomTensor(Batch, 3, 8).AsView();
        View gate = s.RandomTensor(Batch, 8).AsView().BroadcastRows(3);
        View wrongRows = s.RandomTensor(Batch + 1, 8).AsView();
        View broadcastGradient = s.RandomTensor(1, 8).AsView() with { Rows = Batch, RowStride = 0 };
        Should.Throw<ArgumentException>(() => s.Backend.GatedResidualBackward(dx, wrongRows, dy, x, gate));
        Should.Throw<ArgumentException>(() => s.Backend.GatedResidualBackward(dx, broadcastGradient, dy, x, gate));
    }

    private static void FillWithNaN(CpuTensor tensor) => tensor.Span.Fill(float.NaN);

    private static double[] Modulate(double[] x, double[] shift, double[] scale, int rows, int cols)
    {
        double[] shifts = GradientCheck.BroadcastRows(shift, Batch, rows, cols), scales = GradientCheck.BroadcastRows(scale, Batch, rows, cols);
        return x.Select((v, i) => (1 + scales[i]) * v + shifts[i]).ToArray();
    }

    private static double[] GatedResidual(double[] residual, double[] x, double[] gate, int rows, int cols)
    {
        double[] gates = GradientCheck.BroadcastRows(gate, Batch, rows, cols);
        return x.Select((v, i) => residual[i] + gates[i] * v).ToArray();
    }
}
