using InFluxEdit.Runtime.Backends;
using Shouldly;
using InFluxEdit.Runtime.Backends.Cpu;

namespace InFluxEdit.Tests.Cpu;

/// <summary>Seeded random tensors and plain float64 reads of views, independent of the backend's own stride code.</summary>
internal sealed class CpuTestSupport : IDisposable
{
    private readonly Random _random;

    public CpuTestSupport(int seed)
    {
        _random = new Random(seed);
        Backend = new CpuBackend();
    }

    public CpuBackend Backend { get; }

    public CpuTensor RandomTensor(params int[] shape) => RandomTensor(-1, 1, shape);

    public CpuTensor RandomTensor(double low, double high, params int[] shape)
    {
        var tensor = (CpuTensor)Backend.Allocate(shape);
        Span<float> data = tensor.Span;
        for (int i = 0; i < data.Length; i++) data[i] = (float)(low + (high - low) * _random.NextDouble());
        return tensor;
    }

    public double NextDouble() => _random.NextDouble();

    /// <summary>Element (b, r, c) of a view, found from the View definition alone.</summary>
    public static double At(View view, int b, int r, int c)
        => ((CpuTensor)view.Tensor).Span[(int)(view.Offset + b * view.BatchStride + r * view.RowStride + c)];

    /// <summary>The view's elements in (b, r, c) order.</summary>
    public static double[] Read(View view)
    {
        var values = new double[view.ElementCount];
        int i = 0;
        for (int b = 0; b < view.Batch; b++)
            for (int r = 0; r < view.Rows; r++)
                for (int c = 0; c < view.Cols; c++)
                    values[i++] = At(view, b, r, c);
        return values;
    }

    /// <summary>A float64 copy laid out [b][r][c], taken before an op that may overwrite its input.</summary>
    public static double[][][] Snapshot(View view)
    {
        var values = new double[view.Batch][][];
        for (int b = 0; b < view.Batch; b++)
        {
            values[b] = new double[view.Rows][];
            for (int r = 0; r < view.Rows; r++)
            {
                values[b][r] = new double[view.Cols];
                for (int c = 0; c < view.Cols; c++) values[b][r][c] = At(view, b, r, c);
            }
        }
        return values;
    }

    public static double[] Flatten(double[][][] values) => values.SelectMany(b => b.SelectMany(r => r)).ToArray();

    public static double RelativeL2Error(double[] actual, double[] expected)
    {
        actual.Length.ShouldBe(expected.Length);
        double difference = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = actual[i] - expected[i];
            difference += d * d;
            norm += expected[i] * expected[i];
        }
        return norm == 0 ? Math.Sqrt(difference) : Math.Sqrt(difference / norm);
    }

    public static void ShouldMatch(double[] actual, double[] expected, double relativeL2, double maxAbsolute = double.PositiveInfinity)
    {
        actual.Length.ShouldBe(expected.Length);
        double maxError = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double.IsFinite(actual[i]).ShouldBeTrue($"element {i} is {actual[i]}");
            maxError = Math.Max(maxError, Math.Abs(actual[i] - expected[i]));
        }
        RelativeL2Error(actual, expected).ShouldBeLessThanOrEqualTo(relativeL2);
        maxError.ShouldBeLessThanOrEqualTo(maxAbsolute);
    }

    public void Dispose() => Backend.Dispose();
}
