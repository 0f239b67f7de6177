namespace InFluxEdit.Runtime.Sampling;

/// <summary>
/// The timesteps of rectified-flow sampling, from 1 (pure noise) down to 0 (the image), as BFL's
/// <c>get_schedule</c> computes them (spec §6). In double precision; the reference computes in float32, so values
/// agree to about 1e-7.
/// </summary>
public static class FlowMatchSchedule
{
    /// <summary>t_i = 1 − i/N for i = 0..N: N + 1 values, without the resolution shift.</summary>
    public static double[] Linear(int steps)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "sampling needs at least one step");
        var t = new double[steps + 1];
        for (int i = 0; i <= steps; i++) t[i] = 1.0 - (double)i / steps;
        // 1 − N/N is exactly 0 already; the reference relies on the last value being 0, so keep it explicit.
        t[steps] = 0;
        return t;
    }

    /// <summary>
    /// The linear schedule shifted towards noise by the image's size: mu grows linearly with the image sequence
    /// length Li through (baseSeqLen, baseShift) and (maxSeqLen, maxShift), not clamped outside them, and every t
    /// becomes exp(mu) / (exp(mu) + (1/t − 1)). Larger images spend more steps at high noise.
    /// </summary>
    public static double[] Shifted(int steps, int imageSequenceLength, double baseShift = 0.5, double maxShift = 1.15,
        int baseSeqLen = 256, int maxSeqLen = 4096)
    {
        if (imageSequenceLength < 1)
            throw new ArgumentOutOfRangeException(nameof(imageSequenceLength), imageSequenceLength, "the image sequence needs at least one token");
        if (maxSeqLen == baseSeqLen)
            throw new ArgumentException("maxSeqLen and baseSeqLen must differ: mu is the line through both");
        double slope = (maxShift - baseShift) / (maxSeqLen - baseSeqLen);
        double mu = slope * imageSequenceLength + (baseShift - slope * baseSeqLen);
        double expMu = Math.Exp(mu);
        var t = Linear(steps);
        for (int i = 0; i < t.Length; i++)
            // 1/t − 1 is infinite at t = 0 and the quotient 0 there, as in the reference; written out to not depend on it.
            t[i] = t[i] == 0 ? 0 : expMu / (expMu + (1.0 / t[i] - 1.0));
        return t;
    }
}
