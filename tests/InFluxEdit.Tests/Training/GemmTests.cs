using System.Runtime.Intrinsics.X86;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using Shouldly;
using InFluxEdit.Tests.Cpu;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

public unsafe class GemmTests
{
    private const double Tolerance = 1e-5;

    public static TheoryData<int, int, int, bool, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool, bool>();
        var sizes = new (int M, int N, int K)[]
        {
            (1, 1, 1), (3, 17, 33), (17, 1, 3), (33, 33, 17), (1, 33, 3),
            (200, 40, 300), // several M blocks (MC 192) and K blocks (KC 256)
            (13, 600, 5),   // several N blocks (NC 512)
        };
        foreach ((int m, int n, int k) in sizes)
            foreach (bool transposeA in new[] { false, true })
                foreach (bool transposeB in new[] { false, true })
                    data.Add(m, n, k, transposeA, transposeB);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Gemm_matches_a_float64_triple_loop_on_strided_views(int m, int n, int k, bool transposeA, bool transposeB)
    {
        using var s = new CpuTestSupport(m * 131 + n * 17 + k + (transposeA ? 1 : 0) + (transposeB ? 2 : 0));
        const int batch = 2;
        // a and b are column slices of wider tensors, c a column slice too, so no stride equals a width.
        View a = Stored(s, batch, transposeA ? k : m, transposeA ? m : k);
        View b = Stored(s, batch, transposeB ? n : k, transposeB ? k : n);
        View c = Stored(s, batch, m, n);
        double[][][] before = Snapshot(c);

        s.Backend.Gemm(c, a, transposeA, b, transposeB, alpha: 0.75f, beta: -1.5f);

        double[] expected = Expected(Snapshot(a), transposeA, Snapshot(b), transposeB, before, 0.75, -1.5, m, n, k);
        ShouldMatch(Read(c), expected, Tolerance);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Alpha_and_beta_take_their_special_values_as_BLAS_does(bool transposeA, bool transposeB)
    {
        using var s = new CpuTestSupport(11);
        const int m = 17, n = 33, k = 3;
        View a = Stored(s, 1, transposeA ? k : m, transposeA ? m : k);
        View b = Stored(s, 1, transposeB ? n : k, transposeB ? k : n);
        View c = Stored(s, 1, m, n);

        // beta = 0: c is not read, so NaN there must not survive.
        FillWith(c, float.NaN);
        s.Backend.Gemm(c, a, transposeA, b, transposeB, alpha: 1f, beta: 0f);
        ShouldMatch(Read(c), Expected(Snapshot(a), transposeA, Snapshot(b), transposeB, Snapshot(c), 1, 0, m, n, k), Tolerance);

        // beta = 1 accumulates (dW +=).
        double[][][] accumulated = Snapshot(c);
        s.Backend.Gemm(c, a, transposeA, b, transposeB, alpha: 2f, beta: 1f);
        ShouldMatch(Read(c), Expected(Snapshot(a), transposeA, Snapshot(b), transposeB, accumulated, 2, 1, m, n, k), Tolerance);

        // alpha = 0 only scales c.
        double[][][] scaled = Snapshot(c);
        s.Backend.Gemm(c, a, transposeA, b, transposeB, alpha: 0f, beta: 0.5f);
        ShouldMatch(Read(c), Flatten(scaled).Select(x => 0.5 * x).ToArray(), 1e-7);
    }

    [Fact]
    public void A_shared_weight_serves_every_batch_stacked_or_not()
    {
        using var s = new CpuTestSupport(12);
        const int batch = 3, rows = 17, input = 33, output = 20;
        // dx = dy·W for a batch: W as a Batch-1 view, and as a broadcast with BatchStride 0.
        var weight = s.RandomTensor(output, input);
        View stacked = s.RandomTensor(batch, rows, output).AsView();
        View notStacked = s.RandomTensor(batch, rows + 2, output).AsView().RowRange(1, rows);
        foreach (View dy in new[] { stacked, notStacked })
            foreach (View w in new[] { View.Of(weight), View.Of(weight) with { Batch = batch, BatchStride = 0 } })
            {
                View dx = s.RandomTensor(batch, rows, input).AsView();
                s.Backend.Gemm(dx, dy, false, w, false, alpha: 1f, beta: 0f);
                double[][][] weights = Enumerable.Repeat(Snapshot(View.Of(weight))[0], batch).ToArray();
                ShouldMatch(Read(dx), Expected(Snapshot(dy), false, weights, false, Snapshot(dx), 1, 0, rows, input, output), Tolerance);
            }
    }

    [Theory]
    [InlineData(true, false)]  // dW += dyᵀ·x over a batch
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void A_single_batch_c_sums_the_products_of_all_batches(bool transposeA, bool transposeB)
    {
        using var s = new CpuTestSupport(13 + (transposeA ? 1 : 0) + (transposeB ? 2 : 0));
        const int batch = 3, m = 17, n = 33, k = 5;
        foreach (bool stacked in new[] { true, false })
        {
            View a = stacked ? s.RandomTensor(batch, transposeA ? k : m, transposeA ? m : k).AsView() : Stored(s, batch, transposeA ? k : m, transposeA ? m : k, rowGap: 2);
            View b = stacked ? s.RandomTensor(batch, transposeB ? n : k, transposeB ? k : n).AsView() : Stored(s, batch, transposeB ? n : k, transposeB ? k : n, rowGap: 2);
            View c = Stored(s, 1, m, n);
            double[][][] before = Snapshot(c);

            s.Backend.Gemm(c, a, transposeA, b, transposeB, alpha: 1.5f, beta: 1f);

            var expected = new double[m * n];
            for (int i = 0; i < batch; i++)
            {
                double[] product = Expected(new[] { Snapshot(a)[i] }, transposeA, new[] { Snapshot(b)[i] }, transposeB,
                    new[] { new double[m][].Select(_ => new double[n]).ToArray() }, 1.5, 0, m, n, k);
                for (int j = 0; j < expected.Length; j++) expected[j] += product[j];
            }
            double[] initial = Flatten(before);
            for (int j = 0; j < expected.Length; j++) expected[j] += initial[j];
            ShouldMatch(Read(c), expected, Tolerance);
        }
    }

    [Fact]
    public void Overlapping_or_mismatched_operands_are_rejected()
    {
        using var s = new CpuTestSupport(14);
        View a = s.RandomTensor(1, 4, 6).AsView(), b = s.RandomTensor(1, 6, 5).AsView(), c = s.RandomTensor(1, 4, 5).AsView();
        Should.Throw<ArgumentException>(() => s.Backend.Gemm(c, a, false, b, true, 1f, 0f));        // op(b) is 5×6
        Should.Throw<ArgumentException>(() => s.Backend.Gemm(a.Columns(0, 5), a, false, b, false, 1f, 0f)); // c inside a
        View broadcastC = c with { Batch = 2, BatchStride = 0 };
        View twoBatches = s.RandomTensor(2, 4, 6).AsView();
        Should.Throw<ArgumentException>(() => s.Backend.Gemm(broadcastC, twoBatches, false, b, false, 1f, 0f));
    }

    public static IEnumerable<object[]> Kernels()
    {
        if (Avx512F.IsSupported) yield return new object[] { "Avx512" };
        if (Fma.IsSupported && Avx.IsSupported) yield return new object[] { "Avx2" };
        yield return new object[] { "Portable" };
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Every_micro_kernel_computes_all_four_transposes(string kernelName)
    {
        var kernel = Enum.Parse<GemmKernel>(kernelName);
        using var s = new CpuTestSupport(15);
        const int m = 30, n = 40, k = 270;
        foreach (bool transposeA in new[] { false, true })
            foreach (bool transposeB in new[] { false, true })
            {
                View a = Stored(s, 1, transposeA ? k : m, transposeA ? m : k);
                View b = Stored(s, 1, transposeB ? n : k, transposeB ? k : n);
                View c = Stored(s, 1, m, n);
                double[][][] before = Snapshot(c);
                var problem = new GeneralGemmProblem(m, n, k, CpuBackend.Base(a), a.RowStride, transposeA, CpuBackend.Base(b), b.RowStride,
                    transposeB, CpuBackend.Base(c), c.RowStride, alpha: -0.5f, beta: 2f);
                CpuGemm.MultiplyGeneral(problem, kernel, parallel: true);
                ShouldMatch(Read(c), Expected(Snapshot(a), transposeA, Snapshot(b), transposeB, before, -0.5, 2, m, n, k), Tolerance);
            }
    }

    /// <summary>A [batch, rows, cols] view with padding columns on both sides and, optionally, gap rows between batches.</summary>
    private static View Stored(CpuTestSupport s, int batch, int rows, int cols, int rowGap = 0)
        => s.RandomTensor(batch, rows + rowGap, cols + 5).AsView().RowRange(rowGap, rows).Columns(2, cols);

    private static void FillWith(View view, float value)
    {
        var tensor = (CpuTensor)view.Tensor;
        for (int b = 0; b < view.Batch; b++)
            for (int r = 0; r < view.Rows; r++)
                tensor.Span.Slice((int)(view.Offset + b * view.BatchStride + r * view.RowStride), view.Cols).Fill(value);
    }

    /// <summary>alpha·op(a)·op(b) + beta·c per batch, with op read from the stored layout by index arithmetic.</summary>
    private static double[] Expected(double[][][] a, bool transposeA, double[][][] b, bool transposeB, double[][][] c,
        double alpha, double beta, int m, int n, int k)
    {
        var result = new double[c.Length * m * n];
        for (int batch = 0; batch < c.Length; batch++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double sum = 0;
                    for (int p = 0; p < k; p++)
                        sum += (transposeA ? a[batch][p][i] : a[batch][i][p]) * (transposeB ? b[batch][j][p] : b[batch][p][j]);
                    result[(batch * m + i) * n + j] = alpha * sum + (beta == 0 ? 0 : beta * c[batch][i][j]);
                }
        return result;
    }
}
