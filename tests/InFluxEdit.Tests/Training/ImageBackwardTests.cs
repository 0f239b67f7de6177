using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Tests.Cpu;
using Shouldly;
using static InFluxEdit.Tests.Cpu.CpuTestSupport;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// Backward kernels of full-parameter training (the autoencoder's ops and norm scales), each against central
/// differences of an independent float64 forward written here. Parameter gradients accumulate, so each buffer starts
/// from random values and the test checks what was added.
/// </summary>
public class ImageBackwardTests
{
    [Theory]
    [InlineData(2, 5, 4, 3, 4, 3, 1, 1, 1, 1, 1)]   // 3×3, padding 1 (the resnet convs)
    [InlineData(1, 6, 7, 2, 3, 3, 2, 0, 0, 1, 1)]   // 3×3, stride 2, right/bottom padding (the downsample)
    [InlineData(2, 3, 5, 5, 2, 1, 1, 0, 0, 0, 0)]   // 1×1 (nin_shortcut, attention q/k/v)
    [InlineData(1, 4, 4, 3, 2, 2, 1, 1, 0, 0, 1)]   // 2×2 with uneven padding
    public void Conv2dBackward_matches_finite_differences(int batch, int height, int width, int cin, int cout, int kernel, int stride,
        int top, int left, int bottom, int right)
    {
        using var s = new CpuTestSupport(400 + height * 10 + width + cin);
        var padding = new Padding2d(top, left, bottom, right);
        int outH = (height + top + bottom - kernel) / stride + 1, outW = (width + left + right - kernel) / stride + 1;
        View x = s.RandomTensor(batch, height * width, cin).AsView();
        var weight = s.RandomTensor(cout, cin, kernel, kernel);
        var bias = s.RandomTensor(cout);
        View dy = s.RandomTensor(batch, outH * outW, cout + 2).AsView().Columns(1, cout);   // a strided dy
        double[] xs = Read(x), ws = Read(View.Of(weight)), bs = Read(View.Of(bias)), dys = Read(dy);
        double[] Forward(double[] input, double[] w, double[] b) => Conv(input, w, b, batch, height, width, cin, cout, kernel, stride, top, left, outH, outW);

        double[] expectedDx = GradientCheck.Gradient(xs, v => Forward(v, ws, bs), dys);
        double[] expectedDw = GradientCheck.Gradient(ws, v => Forward(xs, v, bs), dys);
        double[] expectedDb = GradientCheck.Gradient(bs, v => Forward(xs, ws, v), dys);

        using var dx = s.Backend.Allocate(new[] { batch, height * width, cin });
        s.Backend.Conv2dBackwardInput(dx, dy, height, width, weight, stride, padding);
        GradientCheck.ShouldMatch(dx, expectedDx);

        var dw = s.RandomTensor(cout, cin, kernel, kernel);
        double[] before = Read(View.Of(dw));
        s.Backend.Conv2dBackwardWeight(dw, dy, x, height, width, stride, padding);
        ShouldMatch(Read(View.Of(dw)).Select((v, i) => v - before[i]).ToArray(), expectedDw, GradientCheck.Tolerance);

        // The bias gradient is the generated code's SumRows over every pixel of every sample.
        var db = s.RandomTensor(cout);
        double[] beforeBias = Read(View.Of(db));
        s.Backend.SumRows(View.Of(db).Reshape(1, 1, cout), dy, 1f);
        ShouldMatch(Read(View.Of(db)).Select((v, i) => v - beforeBias[i]).ToArray(), expectedDb, GradientCheck.Tolerance);
    }

    [Theory]
    [InlineData(2, 6, 8, 4, false)]
    [InlineData(1, 5, 6, 3, true)]
    [InlineData(2, 7, 4, 1, false)]
    public void GroupNormBackward_matches_finite_differences_with_affine_parameters(int batch, int pixels, int channels, int groups, bool inPlace)
    {
        using var s = new CpuTestSupport(500 + pixels * channels + groups);
        const float eps = 1e-6f;
        // Values away from zero exercise the recomputed mean.
        View x = s.RandomTensor(1.0, 3.0, batch, pixels, channels).AsView();
        var scale = s.RandomTensor(0.5, 1.5, channels);
        var bias = s.RandomTensor(channels);
        View dy = s.RandomTensor(batch, pixels, channels).AsView();
        double[] xs = Read(x), scales = Read(View.Of(scale)), biases = Read(View.Of(bias)), dys = Read(dy);
        double[] Forward(double[] input, double[] sc, double[] bi) => GroupNorm(input, sc, bi, batch, pixels, channels, groups, eps);
        double[] expectedDx = GradientCheck.Gradient(xs, v => Forward(v, scales, biases), dys);
        double[] expectedDs = GradientCheck.Gradient(scales, v => Forward(xs, v, biases), dys);
        double[] expectedDb = GradientCheck.Gradient(biases, v => Forward(xs, scales, v), dys);

        var dScale = s.RandomTensor(channels);
        var dBias = s.RandomTensor(channels);
        double[] scaleBefore = Read(View.Of(dScale)), biasBefore = Read(View.Of(dBias));
        View dx = inPlace ? dy : s.Backend.Allocate(new[] { batch, pixels, channels }).AsView();
        s.Backend.GroupNormBackward(dx, dScale, dBias, dy, x, groups, scale, eps);

        GradientCheck.ShouldMatch(dx, expectedDx);
        ShouldMatch(Read(View.Of(dScale)).Select((v, i) => v - scaleBefore[i]).ToArray(), expectedDs, GradientCheck.Tolerance);
        ShouldMatch(Read(View.Of(dBias)).Select((v, i) => v - biasBefore[i]).ToArray(), expectedDb, GradientCheck.Tolerance);
    }

    [Fact]
    public void GroupNormBackward_without_dx_only_adds_the_parameter_gradients()
    {
        using var s = new CpuTestSupport(77);
        View x = s.RandomTensor(1, 9, 6).AsView();
        View dy = s.RandomTensor(1, 9, 6).AsView();
        var dBias = s.Backend.Allocate(new[] { 6 });
        s.Backend.Zero(dBias);
        s.Backend.GroupNormBackward(null, null, dBias, dy, x, 2, null, 1e-6f);
        var dys = Read(dy);
        var expected = Enumerable.Range(0, 6).Select(c => Enumerable.Range(0, 9).Sum(r => dys[r * 6 + c])).ToArray();
        ShouldMatch(Read(View.Of(dBias)), expected, 1e-6);
    }

    [Theory]
    [InlineData(1, 2, 3, 4)]
    [InlineData(2, 3, 2, 5)]
    public void UpsampleNearest2xBackward_matches_finite_differences(int batch, int height, int width, int channels)
    {
        using var s = new CpuTestSupport(600 + height * width * channels);
        View x = s.RandomTensor(batch, height * width, channels).AsView();
        View dy = s.RandomTensor(batch, 4 * height * width, channels).AsView();
        double[] expected = GradientCheck.Gradient(Read(x), v => Upsample(v, batch, height, width, channels), Read(dy));
        using var dx = s.Backend.Allocate(new[] { batch, height * width, channels });
        s.Backend.UpsampleNearest2xBackward(dx, dy, height, width);
        GradientCheck.ShouldMatch(dx, expected);
    }

    [Theory]
    [InlineData(3, 16)]
    [InlineData(2, 17)]
    [InlineData(1, 5)]
    public void RmsNormScaleBackward_matches_finite_differences(int heads, int groupSize)
    {
        using var s = new CpuTestSupport(700 + heads * groupSize);
        const float eps = 1e-6f;
        int width = heads * groupSize;
        // q's columns of a fused [q | k | v] row, as QK-norm reads them.
        View x = s.RandomTensor(2, 3, 3 * width).AsView().Columns(width, width);
        var scale = s.RandomTensor(0.5, 1.5, groupSize);
        View dy = s.RandomTensor(2, 3, width).AsView();
        double[] xs = Read(x);
        double[] expected = GradientCheck.Gradient(Read(View.Of(scale)), v => RmsNorm(xs, v, groupSize, eps), Read(dy));
        var dScale = s.RandomTensor(groupSize);
        double[] before = Read(View.Of(dScale));
        s.Backend.RmsNormScaleBackward(dScale, dy, x, groupSize, eps);
        ShouldMatch(Read(View.Of(dScale)).Select((v, i) => v - before[i]).ToArray(), expected, GradientCheck.Tolerance);
    }

    /// <summary>PyTorch's Conv2d on channels-last [B, H·W, Cin] with a [Cout, Cin, k, k] weight, zero padding.</summary>
    private static double[] Conv(double[] x, double[] w, double[] bias, int batch, int height, int width, int cin, int cout, int kernel,
        int stride, int top, int left, int outH, int outW)
    {
        var y = new double[batch * outH * outW * cout];
        for (int b = 0; b < batch; b++)
            for (int oy = 0; oy < outH; oy++)
                for (int ox = 0; ox < outW; ox++)
                    for (int co = 0; co < cout; co++)
                    {
                        double sum = bias[co];
                        for (int ci = 0; ci < cin; ci++)
                            for (int ky = 0; ky < kernel; ky++)
                                for (int kx = 0; kx < kernel; kx++)
                                {
                                    int iy = oy * stride - top + ky, ix = ox * stride - left + kx;
                                    if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                                    sum += w[((co * cin + ci) * kernel + ky) * kernel + kx] * x[((b * height + iy) * width + ix) * cin + ci];
                                }
                        y[((b * outH + oy) * outW + ox) * cout + co] = sum;
                    }
        return y;
    }

    private static double[] GroupNorm(double[] x, double[] scale, double[] bias, int batch, int pixels, int channels, int groups, double eps)
    {
        var y = new double[x.Length];
        int size = channels / groups;
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < groups; g++)
            {
                var values = new List<double>();
                for (int p = 0; p < pixels; p++)
                    for (int c = g * size; c < (g + 1) * size; c++) values.Add(x[(b * pixels + p) * channels + c]);
                double mean = values.Average();
                double variance = values.Sum(v => (v - mean) * (v - mean)) / values.Count;
                for (int p = 0; p < pixels; p++)
                    for (int c = g * size; c < (g + 1) * size; c++)
                    {
                        int i = (b * pixels + p) * channels + c;
                        y[i] = (x[i] - mean) / Math.Sqrt(variance + eps) * scale[c] + bias[c];
                    }
            }
        return y;
    }

    private static double[] Upsample(double[] x, int batch, int height, int width, int channels)
    {
        var y = new double[4 * x.Length];
        for (int b = 0; b < batch; b++)
            for (int oy = 0; oy < 2 * height; oy++)
                for (int ox = 0; ox < 2 * width; ox++)
                    for (int c = 0; c < channels; c++)
                        y[((b * 2 * height + oy) * 2 * width + ox) * channels + c] = x[((b * height + oy / 2) * width + ox / 2) * channels + c];
        return y;
    }

    private static double[] RmsNorm(double[] x, double[] scale, int groupSize, double eps)
    {
        var y = new double[x.Length];
        for (int start = 0; start < x.Length; start += groupSize)
        {
            double meanSquare = 0;
            for (int j = 0; j < groupSize; j++) meanSquare += x[start + j] * x[start + j];
            double r = 1 / Math.Sqrt(meanSquare / groupSize + eps);
            for (int j = 0; j < groupSize; j++) y[start + j] = x[start + j] * r * scale[j];
        }
        return y;
    }
}
