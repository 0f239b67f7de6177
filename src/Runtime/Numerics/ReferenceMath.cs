namespace InFluxEdit.Runtime.Numerics;

/// <summary>
/// Float32 functions that round exactly like the vectorised math PyTorch uses on the CPU, where a reference
/// depends on it. Timestep frequencies come from a float32 exp and are then multiplied by t·1000 (up to 30000
/// for guidance 30): one ulp of difference in a frequency moves the angle by ~1e-3 rad.
/// </summary>
public static class ReferenceMath
{
    /// <summary>
    /// exp(x) in float32 by SLEEF's expf_u10 algorithm (the one PyTorch's Vectorized&lt;float&gt;::exp calls):
    /// Cody–Waite reduction by ln 2 in two parts, a degree-5 polynomial with fused multiply-adds, then scaling by 2^q.
    /// </summary>
    public static float ExpFloat32(float x)
    {
        const float InverseLn2 = 1.442695040888963407359924681001892137f;
        const float Ln2High = 0.693145751953125f;
        const float Ln2Low = 1.428606765330187045e-06f;

        float q = MathF.Round(x * InverseLn2, MidpointRounding.ToEven);
        float s = MathF.FusedMultiplyAdd(q, -Ln2High, x);
        s = MathF.FusedMultiplyAdd(q, -Ln2Low, s);

        float u = 0.000198527617612853646278381f;
        u = MathF.FusedMultiplyAdd(u, s, 0.00139304355252534151077271f);
        u = MathF.FusedMultiplyAdd(u, s, 0.00833336077630519866943359f);
        u = MathF.FusedMultiplyAdd(u, s, 0.0416664853692054748535156f);
        u = MathF.FusedMultiplyAdd(u, s, 0.166666671633720397949219f);
        u = MathF.FusedMultiplyAdd(u, s, 0.5f);
        u = MathF.FusedMultiplyAdd(s * s, u, s) + 1f;

        if (x < -104f) return 0f;
        if (x > 88.72283905206835f) return float.PositiveInfinity;
        return MathF.ScaleB(u, (int)q);
    }

    /// <summary>
    /// The sinusoidal embedding's frequencies as the reference computes them in float32:
    /// exp(float32(−ln(maxPeriod))·k / half) for k = 0..half−1.
    /// </summary>
    public static float[] TimestepFrequencies(int half, float maxPeriod)
    {
        float negativeLogPeriod = (float)-Math.Log(maxPeriod);
        var frequencies = new float[half];
        for (int k = 0; k < half; k++) frequencies[k] = ExpFloat32(negativeLogPeriod * k / half);
        return frequencies;
    }
}
