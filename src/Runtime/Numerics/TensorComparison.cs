namespace InFluxEdit.Runtime.Numerics;

public static class TensorComparison
{
    /// <summary>‖actual − expected‖₂ / ‖expected‖₂ in float64 (the absolute error when expected is all zeros).</summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length)
            throw new ArgumentException($"cannot compare {actual.Length} values with {expected.Length}");
        double diff = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = (double)actual[i] - expected[i];
            diff += d * d;
            norm += (double)expected[i] * expected[i];
        }
        if (double.IsNaN(diff)) return double.NaN;
        return norm == 0 ? Math.Sqrt(diff) : Math.Sqrt(diff / norm);
    }
}
