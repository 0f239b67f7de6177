namespace InFluxEdit.Tests;

/// <summary>Multi-head softmax(q·kᵀ·scale)·v in float64, the reference every backend's attention is tested against.</summary>
public static class AttentionReference
{
    /// <param name="q">q(b, row, column) over heads·headDim columns; likewise k and v over the key rows.</param>
    /// <returns>The output, row-major [batch, queryRows, heads·headDim].</returns>
    public static double[] Compute(int batch, int heads, int headDim, int queryRows, int keyRows, double scale,
        Func<int, int, int, double> q, Func<int, int, int, double> k, Func<int, int, int, double> v)
    {
        int width = heads * headDim;
        var output = new double[batch * queryRows * width];
        var scores = new double[keyRows];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < queryRows; i++)
                {
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < keyRows; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < headDim; d++) dot += q(b, i, h * headDim + d) * k(b, j, h * headDim + d);
                        scores[j] = dot * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    double total = 0;
                    for (int j = 0; j < keyRows; j++) total += scores[j] = Math.Exp(scores[j] - max);
                    for (int d = 0; d < headDim; d++)
                    {
                        double sum = 0;
                        for (int j = 0; j < keyRows; j++) sum += scores[j] * v(b, j, h * headDim + d);
                        output[(b * queryRows + i) * width + h * headDim + d] = sum / total;
                    }
                }
        return output;
    }
}
