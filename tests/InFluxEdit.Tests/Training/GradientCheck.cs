using InFluxEdit.Runtime.Backends;
using InFluxEdit.Tests.Cpu;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// The yardstick for every backward kernel: with loss = Σ w⊙f(inputs) for random weights w (so dy = w), the gradient
/// of a plain float64 forward by central differences.
/// </summary>
internal static class GradientCheck
{
    /// <summary>Backward kernels run in float32; against float64 differences they agree to a few float32 roundings.</summary>
    public const double Tolerance = 1e-4;

    /// <summary>∂(Σ w⊙forward(x))/∂x by central differences with a step relative to each element.</summary>
    public static double[] Gradient(double[] x, Func<double[], double[]> forward, double[] weights)
    {
        var gradient = new double[x.Length];
        var probe = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            double step = 1e-6 * Math.Max(1.0, Math.Abs(x[i]));
            probe[i] = x[i] + step;
            double up = Loss(forward(probe), weights);
            probe[i] = x[i] - step;
            double down = Loss(forward(probe), weights);
            probe[i] = x[i];
            gradient[i] = (up - down) / (2 * step);
        }
        return gradient;
    }

    public static double Loss(double[] y, double[] weights)
    {
        if (y.Length != weights.Length) throw new ArgumentException($"forward gave {y.Length} values for {weights.Length} weights");
        double sum = 0;
        for (int i = 0; i < y.Length; i++) sum += y[i] * weights[i];
        return sum;
    }

    /// <summary>The kernel's float32 gradient, read from its view, against the float64 one.</summary>
    public static void ShouldMatch(View actual, double[] expected) => CpuTestSupport.ShouldMatch(CpuTestSupport.Read(actual), expected, Tolerance);

    /// <summary>Per-sample vectors [B, C] in (b, c) order, expanded to the [B, rows, C] a broadcast view reads.</summary>
    public static double[] BroadcastRows(double[] perSample, int batch, int rows, int cols)
    {
        var expanded = new double[batch * rows * cols];
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                Array.Copy(perSample, b * cols, expanded, (b * rows + r) * cols, cols);
        return expanded;
    }
}
