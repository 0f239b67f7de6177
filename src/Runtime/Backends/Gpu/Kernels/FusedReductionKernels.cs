using ILGPU;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// Up to <see cref="MaxSums"/> per-sample sums over the rows of one [batch, rows, cols] shape, computed by one pair of
/// launches (see <see cref="FusedKernelLauncher.SumRows"/>): sum s is Σ_r Gradient_s (times Factor_s where bit s of
/// <see cref="Factors"/> is set) into Target_s, plus Beta_s·Target_s.
/// </summary>
public readonly struct FusedColumnSums
{
    public const int MaxSums = 3;

    public readonly ColumnChunks Shape;
    public readonly int Count, Factors;
    public readonly FusedOperand Gradient0, Gradient1, Gradient2, Factor0, Factor1, Factor2, Target0, Target1, Target2;
    public readonly float Beta0, Beta1, Beta2;

    public FusedColumnSums(ColumnChunks shape, FusedOperand[] gradients, FusedOperand?[] factors, FusedOperand[] targets, float[] betas)
    {
        Shape = shape;
        Count = gradients.Length;
        Factors = 0;
        for (int i = 0; i < factors.Length; i++)
            if (factors[i] is not null) Factors |= 1 << i;
        FusedOperand At(FusedOperand[] list, int i) => i < list.Length ? list[i] : default;
        FusedOperand FactorAt(int i) => i < factors.Length && factors[i] is { } f ? f : default;
        float BetaAt(int i) => i < betas.Length ? betas[i] : 0f;
        Gradient0 = At(gradients, 0); Gradient1 = At(gradients, 1); Gradient2 = At(gradients, 2);
        Factor0 = FactorAt(0); Factor1 = FactorAt(1); Factor2 = FactorAt(2);
        Target0 = At(targets, 0); Target1 = At(targets, 1); Target2 = At(targets, 2);
        Beta0 = BetaAt(0); Beta1 = BetaAt(1); Beta2 = BetaAt(2);
    }

    public FusedOperand Gradient(int s) => s == 0 ? Gradient0 : s == 1 ? Gradient1 : Gradient2;
    public FusedOperand Factor(int s) => s == 0 ? Factor0 : s == 1 ? Factor1 : Factor2;
    public FusedOperand Target(int s) => s == 0 ? Target0 : s == 1 ? Target1 : Target2;
    public float Beta(int s) => s == 0 ? Beta0 : s == 1 ? Beta1 : Beta2;
}

/// <summary>
/// The per-sample sums over tokens that fused backward groups leave to separate launches (modulate's Σ dy and Σ dy·x,
/// the gate's Σ dy·x): partial sums per chunk of rows in row order, then the chunks added in order in float64 (the
/// unfused backward ops' scheme), so the result does not depend on scheduling.
/// </summary>
public static class FusedReductionKernels
{
    /// <summary>One thread per (sample, chunk, column): every sum's partial over the chunk's rows.</summary>
    public static void ColumnSumPartials(Index1D index, FusedColumnSums sums, ArrayView<float> partials)
    {
        var cell = sums.Shape.Cell(index);
        for (int k = 0; k < sums.Count; k++)
        {
            var gradient = sums.Gradient(k);
            var factor = sums.Factor(k);
            bool withFactor = (sums.Factors & (1 << k)) != 0;
            float sum = 0f;
            for (int r = cell.First; r < cell.End; r++)
            {
                float g = gradient.At(cell.FlatRow0 + r, cell.Col);
                sum += withFactor ? g * factor.At(cell.FlatRow0 + r, cell.Col) : g;
            }
            partials[k * sums.Shape.PartialsPerSum + index] = sum;
        }
    }

    /// <summary>One thread per (sum, sample, column): the chunks' partials in chunk order, in float64, then beta·y added.</summary>
    public static void FinishColumnSums(Index1D index, FusedColumnSums sums, ArrayView<float> partials)
    {
        var s = sums.Shape;
        int perSum = (int)(s.PartialsPerSum / s.Chunks);
        int k = index / perSum;
        int within = index - k * perSum;
        int col = within % s.Cols;
        int output = within / s.Cols;
        var target = sums.Target(k);
        float beta = sums.Beta(k);
        float value = (float)s.Total(partials, k, output, col);
        target.Set(output, col, beta == 0f ? value : value + beta * target.At(output, col));
    }
}
