using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Cpu;

public class CpuRowOpTests
{
    /// <summary>Column counts around the 16-float vector width; 300 rows of 257 columns cross the parallel threshold.</summary>
    public static TheoryData<int, int> Shapes() => new() { { 1, 1 }, { 5, 3 }, { 4, 17 }, { 3, 67 }, { 7, 130 }, { 300, 257 } };

    private delegate double[] Reference(int b, int r, double[] x);

    /// <summary>
    /// Three layouts of the same op: dense, a column slice of a wider tensor with a row range, and in place (y = x).
    /// The reference maps one input row (read before the op) to the expected output row.
    /// </summary>
    private static void CheckUnary(int rows, int cols, Action<CpuBackend, View, View> op, Reference reference,
        double relativeL2, double maxAbsolute = double.PositiveInfinity, double low = -1, double high = 1)
    {
        using var s = new CpuTestSupport(rows * 31 + cols);
        foreach (string layout in new[] { "dense", "strided", "in place" })
        {
            View x, y;
            switch (layout)
            {
                case "dense":
                    x = s.RandomTensor(low, high, 2, rows, cols).AsView();
                    y = s.RandomTensor(2, rows, cols).AsView();
                    break;
                case "strided":
                    x = s.RandomTensor(low, high, 2, rows + 3, cols + 9).AsView().RowRange(1, rows).Columns(4, cols);
                    y = s.RandomTensor(2, rows + 1, cols + 2).AsView().RowRange(1, rows).Columns(2, cols);
                    break;
                default:
                    x = y = s.RandomTensor(low, high, 2, rows, cols + 5).AsView().Columns(5, cols);
                    break;
            }
            double[][][] input = Snapshot(x);
            var expected = new List<double>();
            for (int b = 0; b < x.Batch; b++)
                for (int r = 0; r < x.Rows; r++) expected.AddRange(reference(b, r, input[b][r]));
            op(s.Backend, y, x);
            ShouldMatch(Read(y), expected.ToArray(), relativeL2, maxAbsolute);
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void LayerNorm_matches_float64(int rows, int cols)
        => CheckUnary(rows, cols, (be, y, x) => be.LayerNorm(y, x, 1e-6f), (_, _, x) =>
        {
            double mean = x.Average();
            double variance = x.Select(v => (v - mean) * (v - mean)).Average();
            return x.Select(v => (v - mean) / Math.Sqrt(variance + 1e-6)).ToArray();
        }, relativeL2: 1e-6, low: 3, high: 5); // an offset mean exercises the two-pass variance

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Silu_matches_float64(int rows, int cols)
        => CheckUnary(rows, cols, (be, y, x) => be.Silu(y, x), (_, _, x) => x.Select(v => v / (1 + Math.Exp(-v))).ToArray(),
            relativeL2: 1e-6, low: -30, high: 30);

    /// <summary>The vectorised exp past float's range and on NaN: sigmoid saturates cleanly and NaN is not hidden.</summary>
    [Fact]
    public void Silu_saturates_at_extreme_inputs_and_keeps_nan()
    {
        float[] values = [-1e4f, -200, -104, -88.5f, -87.4f, -87.3f, -20, -1e-3f, 0, 1e-3f, 20, 87.3f, 88.1f, 89, 200, 1e4f, float.NaN, 3, -3, 0.5f];
        using var backend = new CpuBackend();
        using var x = backend.Upload(new HostTensor([1, values.Length], values));
        using var y = backend.Upload(new HostTensor(1, values.Length));
        backend.Silu(y.AsView(), x.AsView());
        var result = backend.Download(y.AsView(), [1, values.Length]).Data;
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i]))
            {
                float.IsNaN(result[i]).ShouldBeTrue($"silu(NaN) gave {result[i]}");
                continue;
            }
            double expected = values[i] / (1 + Math.Exp(-(double)values[i]));
            ((double)result[i]).ShouldBe(expected, 1e-6 * Math.Max(1, Math.Abs(expected)), $"silu({values[i]})");
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void GeluTanh_matches_float64(int rows, int cols)
        => CheckUnary(rows, cols, (be, y, x) => be.GeluTanh(y, x),
            (_, _, x) => x.Select(v => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))).ToArray(),
            relativeL2: 1e-6, maxAbsolute: 1e-5, low: -12, high: 12);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Copy_is_exact(int rows, int cols)
        => CheckUnary(rows, cols, (be, y, x) => be.Copy(y, x), (_, _, x) => x, relativeL2: 0, maxAbsolute: 0);

    [Theory]
    [InlineData(3, 16, 16)]
    [InlineData(5, 51, 17)]
    [InlineData(300, 256, 128)]
    public void RmsNorm_matches_float64_per_group(int rows, int cols, int groupSize)
    {
        using var s = new CpuTestSupport(groupSize);
        CpuTensor scale = s.RandomTensor(0.5, 1.5, groupSize);
        double[] g = Read(scale.AsView());
        CheckUnary(rows, cols, (be, y, x) => be.RmsNorm(y, x, scale, groupSize, 1e-6f), (_, _, x) =>
        {
            var y = new double[x.Length];
            for (int start = 0; start < x.Length; start += groupSize)
            {
                double meanSquare = x.Skip(start).Take(groupSize).Select(v => v * v).Average();
                for (int j = 0; j < groupSize; j++) y[start + j] = x[start + j] / Math.Sqrt(meanSquare + 1e-6) * g[j];
            }
            return y;
        }, relativeL2: 1e-6);
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(9, 67)]
    [InlineData(300, 130)]
    public void Modulate_and_GatedResidual_broadcast_per_sample_vectors_over_rows(int rows, int cols)
    {
        using var s = new CpuTestSupport(rows + cols);
        const int batch = 2;
        // A modulation output [B, 3·C] split into (shift, scale, gate), each broadcast over the rows of its sample.
        View modulation = s.RandomTensor(batch, 3 * cols).AsView();
        View shift = modulation.Columns(0, cols).BroadcastRows(rows);
        View scale = modulation.Columns(cols, cols).BroadcastRows(rows);
        View gate = modulation.Columns(2 * cols, cols).BroadcastRows(rows);
        shift.RowStride.ShouldBe(0);

        View x = s.RandomTensor(batch, rows, cols + 1).AsView().Columns(1, cols);
        double[][][] xs = Snapshot(x), shifts = Snapshot(shift), scales = Snapshot(scale), gates = Snapshot(gate);
        s.Backend.Modulate(x, x, shift, scale);
        var expected = new List<double>();
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) expected.Add((1 + scales[b][r][c]) * xs[b][r][c] + shifts[b][r][c]);
        ShouldMatch(Read(x), expected.ToArray(), 1e-6);

        View residual = s.RandomTensor(batch, rows, cols).AsView();
        View update = s.RandomTensor(batch, rows, cols).AsView();
        double[][][] residuals = Snapshot(residual), updates = Snapshot(update);
        s.Backend.GatedResidual(residual, residual, update, gate);
        expected.Clear();
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) expected.Add(residuals[b][r][c] + gates[b][r][c] * updates[b][r][c]);
        ShouldMatch(Read(residual), expected.ToArray(), 1e-6);

        View separate = s.RandomTensor(batch, rows, cols).AsView();
        s.Backend.GatedResidual(separate, modulation.Columns(0, cols).BroadcastRows(rows), update, gate);
        expected.Clear();
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) expected.Add(shifts[b][r][c] + gates[b][r][c] * updates[b][r][c]);
        ShouldMatch(Read(separate), expected.ToArray(), 1e-6);
    }

    [Theory]
    [InlineData(2, 5)]
    [InlineData(300, 257)]
    public void Add_matches_float64_in_place_and_from_broadcast_rows(int rows, int cols)
    {
        using var s = new CpuTestSupport(rows * cols);
        View a = s.RandomTensor(3, rows, cols).AsView();
        View b = s.RandomTensor(1, 3, cols).AsView().BroadcastRows(rows);
        double[][][] before = Snapshot(a), bs = Snapshot(b);
        s.Backend.Add(a, a, b);
        var expected = new List<double>();
        for (int i = 0; i < 3; i++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) expected.Add(before[i][r][c] + bs[i][r][c]);
        ShouldMatch(Read(a), expected.ToArray(), 1e-7);
    }

    [Fact]
    public void TimestepEmbedding_is_cos_then_sin_of_float32_arguments()
    {
        using var s = new CpuTestSupport(21);
        float[] times = { 0f, 0.25f, 0.99358f, 1f, 30f };
        var t = (CpuTensor)s.Backend.Upload(new HostTensor(new[] { times.Length, 1 }, times));
        View y = s.RandomTensor(times.Length, 256 + 3).AsView().Columns(3, 256);
        s.Backend.TimestepEmbedding(y, t.AsView(), 1000f, 10000f);

        var expected = new List<double>();
        foreach (float time in times)
        {
            // PyTorch's order of float32 roundings: argument = fl(fl(1000·t)·freq), with the frequencies rounded
            // as its float32 exp rounds them (ReferenceMathTests checks those against Math.Exp).
            float scaled = 1000f * time;
            var row = new double[256];
            float[] frequencies = ReferenceMath.TimestepFrequencies(128, 10000f);
            for (int k = 0; k < 128; k++)
            {
                float frequency = frequencies[k];
                float argument = scaled * frequency;
                row[k] = Math.Cos(argument);
                row[128 + k] = Math.Sin(argument);
            }
            expected.AddRange(row);
        }
        ShouldMatch(Read(y), expected.ToArray(), 1e-6, maxAbsolute: 1e-6);
    }

    [Fact]
    public void RopeEmbed_writes_rotation_matrices_of_all_axes_in_order()
    {
        using var s = new CpuTestSupport(22);
        int[] axes = { 4, 6, 6 };
        const int tokens = 7;
        float[] ids = Enumerable.Range(0, tokens).SelectMany(i => new[] { 0f, i / 3, i % 3 + 0.5f * i }).ToArray();
        var idTensor = (CpuTensor)s.Backend.Upload(new HostTensor(new[] { 1, tokens, 3 }, ids));
        CpuTensor pe = s.RandomTensor(1, tokens, 32);
        s.Backend.RopeEmbed(pe.AsView(), idTensor.AsView(), axes, 10000f);

        var expected = new List<double>();
        for (int token = 0; token < tokens; token++)
            for (int a = 0; a < axes.Length; a++)
                for (int j = 0; j < axes[a] / 2; j++)
                {
                    double angle = ids[token * 3 + a] * Math.Pow(10000.0, -2.0 * j / axes[a]);
                    expected.AddRange(new[] { Math.Cos(angle), -Math.Sin(angle), Math.Sin(angle), Math.Cos(angle) });
                }
        ShouldMatch(Read(pe.AsView()), expected.ToArray(), 1e-6, maxAbsolute: 1e-6);
    }

    [Theory]
    [InlineData(6, 2)]   // head dim below the vector width: the scalar pairs
    [InlineData(40, 3)]  // 32 vectorised + 8 scalar per head
    [InlineData(128, 4)]
    public void ApplyRope_rotates_interleaved_pairs_of_every_head_in_place(int headDim, int heads)
    {
        using var s = new CpuTestSupport(headDim);
        const int batch = 2, tokens = 150;
        // General 2×2 matrices, not just rotations, so each of the four entries is checked. pe is shared by the
        // batch (batch stride 0) and x is a column slice of a fused q|k tensor.
        CpuTensor peTensor = s.RandomTensor(tokens, headDim * 2);
        View pe = new(peTensor, 0, batch, tokens, headDim * 2, 0, headDim * 2);
        View x = s.RandomTensor(batch, tokens, 2 * heads * headDim).AsView().Columns(heads * headDim, heads * headDim);
        double[][][] xs = Snapshot(x), pes = Snapshot(pe);
        s.Backend.ApplyRope(x, x, pe, headDim);

        var expected = new List<double>();
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < tokens; t++)
                for (int h = 0; h < heads; h++)
                    for (int p = 0; p < headDim / 2; p++)
                    {
                        double x0 = xs[b][t][h * headDim + 2 * p], x1 = xs[b][t][h * headDim + 2 * p + 1];
                        double[] m = pes[b][t];
                        expected.Add(m[4 * p] * x0 + m[4 * p + 1] * x1);
                        expected.Add(m[4 * p + 2] * x0 + m[4 * p + 3] * x1);
                    }
        ShouldMatch(Read(x), expected.ToArray(), 1e-6);
    }

    [Fact]
    public void Upload_Download_and_Allocate_round_trip_through_views()
    {
        using var s = new CpuTestSupport(23);
        float[] data = Enumerable.Range(0, 2 * 3 * 5).Select(i => (float)i).ToArray();
        DeviceTensor tensor = s.Backend.Upload(new HostTensor(new[] { 2, 3, 5 }, data));
        s.Backend.Download(tensor.AsView(), new[] { 30 }).Data.ShouldBe(data);
        HostTensor slice = s.Backend.Download(tensor.AsView().RowRange(1, 2).Columns(3, 2), new[] { 2, 2, 2 });
        slice.Data.ShouldBe(new float[] { 8, 9, 13, 14, 23, 24, 28, 29 });

        tensor.Dispose();
        DeviceTensor reused = s.Backend.Allocate(new[] { 30 });
        reused.Shape.ShouldBe(new[] { 30 });
        Should.Throw<ObjectDisposedException>(() => s.Backend.Copy(reused.AsView(), tensor.AsView().Reshape(1, 1, 30)));
        s.Backend.Description.ShouldStartWith("CPU: ");
        s.Backend.Name.ShouldBe("cpu");
    }

    [Fact]
    public void Views_reaching_outside_their_tensor_are_rejected()
    {
        using var s = new CpuTestSupport(24);
        CpuTensor small = s.RandomTensor(4, 8);
        var outside = new View(small, 4, 1, 4, 8, 32, 8);
        Should.Throw<ArgumentException>(() => s.Backend.Silu(outside, outside));
    }
}
