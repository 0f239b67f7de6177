namespace InFluxEdit.Runtime.Numerics;

/// <summary>
/// The bucket of every relative position (key − query) for T5-style relative attention biases, computed once on
/// the host and shared by the CPU and GPU backends, so both look up the same table rows.
/// </summary>
public static class RelativePositionBuckets
{
    /// <summary>
    /// Buckets of rel = j − i for queries i &lt; <paramref name="queryRows"/> and keys j &lt; <paramref name="keyRows"/>:
    /// element rel + queryRows − 1 of the result (length queryRows + keyRows − 1).
    /// The logarithmic part is rounded like the reference's float32 tensor arithmetic: log of the float32 ratio
    /// a/exact, divided by the float32 ln(maxDistance/exact), times (n − exact), truncated.
    /// </summary>
    public static int[] Compute(int queryRows, int keyRows, int buckets, int maxDistance, bool bidirectional)
    {
        Validate(buckets, maxDistance, bidirectional);
        var result = new int[Math.Max(queryRows + keyRows - 1, 0)];
        for (int index = 0; index < result.Length; index++)
            result[index] = Of(index - (queryRows - 1), buckets, maxDistance, bidirectional);
        return result;
    }

    /// <summary>The bucket of one relative position key − query.</summary>
    public static int Of(int relative, int buckets, int maxDistance, bool bidirectional)
    {
        int n = buckets, offset = 0, distance;
        if (bidirectional)
        {
            n = buckets / 2;
            if (relative > 0) offset = n;
            distance = Math.Abs(relative);
        }
        else
        {
            distance = Math.Max(-relative, 0);
        }
        int exact = n / 2;
        if (distance < exact) return offset + distance;
        float logRatio = MathF.Log((float)distance / exact);
        float logRange = (float)Math.Log((double)maxDistance / exact);
        int large = exact + (int)(logRatio / logRange * (n - exact));
        return offset + Math.Min(large, n - 1);
    }

    private static void Validate(int buckets, int maxDistance, bool bidirectional)
    {
        int n = bidirectional ? buckets / 2 : buckets;
        if (n < 2) throw new ArgumentOutOfRangeException(nameof(buckets), $"{buckets} buckets leave fewer than 2 per direction");
        if (maxDistance <= n / 2) throw new ArgumentOutOfRangeException(nameof(maxDistance), $"max distance {maxDistance} must exceed the {n / 2} exact buckets");
    }
}
