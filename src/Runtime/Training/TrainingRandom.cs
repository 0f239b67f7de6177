using System.Globalization;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// The one random stream of a training run (timesteps, noise, data order): xoshiro256** (Blackman &amp; Vigna), seeded
/// through SplitMix64 as its authors recommend. Its whole state is four words that <see cref="SaveState"/> writes
/// as text, so a resumed run draws exactly what the uninterrupted run would have drawn. Not thread-safe: draws must
/// happen in one order for runs to repeat.
/// </summary>
public sealed class TrainingRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public TrainingRandom(long seed)
    {
        ulong splitMix = (ulong)seed;
        _s0 = SplitMix64(ref splitMix);
        _s1 = SplitMix64(ref splitMix);
        _s2 = SplitMix64(ref splitMix);
        _s3 = SplitMix64(ref splitMix);
    }

    private TrainingRandom(ulong s0, ulong s1, ulong s2, ulong s3)
    {
        if ((s0 | s1 | s2 | s3) == 0)
            throw new ArgumentException("an all-zero xoshiro256** state never leaves zero; the saved state is corrupt");
        (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);
    }

    /// <summary>A generator in exactly this state (four 64-bit words), for tests against the published algorithm.</summary>
    public static TrainingRandom FromState(ulong s0, ulong s1, ulong s2, ulong s3) => new(s0, s1, s2, s3);

    /// <summary>"xoshiro256**:" and the four state words in hex.</summary>
    public string SaveState() => $"xoshiro256**:{_s0:x16}:{_s1:x16}:{_s2:x16}:{_s3:x16}";

    public static TrainingRandom RestoreState(string text)
    {
        string[] parts = text.Split(':');
        if (parts.Length != 5 || parts[0] != "xoshiro256**")
            throw new FormatException($"'{text}' is not a saved TrainingRandom state (expected xoshiro256**:w0:w1:w2:w3)");
        var words = new ulong[4];
        for (int i = 0; i < 4; i++)
            if (!ulong.TryParse(parts[i + 1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out words[i]))
                throw new FormatException($"'{parts[i + 1]}' in the saved random state is not a 64-bit hex word");
        return new TrainingRandom(words[0], words[1], words[2], words[3]);
    }

    public ulong NextUInt64()
    {
        ulong result = RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, count), without modulo bias (Lemire's multiply-and-reject).</summary>
    public int NextInt(int count)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), count, "needs at least one choice");
        ulong range = (ulong)count;
        ulong threshold = (0UL - range) % range;
        while (true)
        {
            UInt128 product = (UInt128)NextUInt64() * range;
            if ((ulong)product >= threshold) return (int)(product >> 64);
        }
    }

    /// <summary>
    /// A standard normal (Box–Muller from two fresh uniforms, the second normal discarded) so that the state alone,
    /// without a cached spare, determines what comes next.
    /// </summary>
    public double NextGaussian()
    {
        double u1 = ((NextUInt64() >> 11) + 1) * (1.0 / (1UL << 53)); // (0, 1]: log is finite
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>Fills with standard normals, two per pair of uniforms (both Box–Muller outputs used).</summary>
    public void FillGaussian(Span<float> values)
    {
        for (int i = 0; i < values.Length; i += 2)
        {
            double u1 = ((NextUInt64() >> 11) + 1) * (1.0 / (1UL << 53));
            double u2 = NextDouble();
            double radius = Math.Sqrt(-2.0 * Math.Log(u1));
            values[i] = (float)(radius * Math.Cos(2.0 * Math.PI * u2));
            if (i + 1 < values.Length) values[i + 1] = (float)(radius * Math.Sin(2.0 * Math.PI * u2));
        }
    }

    /// <summary>Fisher–Yates, in place.</summary>
    public void Shuffle<T>(IList<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
