using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Sampling;

/// <summary>
/// Deterministic standard normal noise from our own seeded generator: the same seed and shape give the same
/// tensor on every run and machine, whatever the thread count. It does NOT reproduce PyTorch's seeds — torch's
/// CPU generator (mt19937 with its own normal sampler, drawn in bf16 by BFL) is a different sequence, so seed 42
/// here and seed 42 in the reference give different images. For an exact reference comparison pass the
/// reference's noise tensor instead (influx-cli edit --noise).
/// </summary>
public static class GaussianNoise
{
    public static HostTensor Create(long seed, params int[] shape)
    {
        var tensor = new HostTensor(shape);
        float[] data = tensor.Data;
        ulong stream = Mix((ulong)seed ^ 0x6A09E667F3BCC909UL);
        // Box–Muller turns two uniforms into two normals; pair k uses counters 2k and 2k + 1, so any element depends
        // only on (seed, index) and chunks can run in parallel.
        long pairs = (data.LongLength + 1) / 2;
        const long pairsPerChunk = 1 << 15;
        Parallel.For(0, (pairs + pairsPerChunk - 1) / pairsPerChunk, chunk =>
        {
            long end = Math.Min(pairs, (chunk + 1) * pairsPerChunk);
            for (long pair = chunk * pairsPerChunk; pair < end; pair++)
            {
                // u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1).
                double u1 = ((Mix(stream + 2 * (ulong)pair) >> 11) + 1) * (1.0 / (1UL << 53));
                double u2 = (Mix(stream + 2 * (ulong)pair + 1) >> 11) * (1.0 / (1UL << 53));
                double radius = Math.Sqrt(-2.0 * Math.Log(u1));
                double angle = 2.0 * Math.PI * u2;
                long index = 2 * pair;
                data[index] = (float)(radius * Math.Cos(angle));
                if (index + 1 < data.LongLength) data[index + 1] = (float)(radius * Math.Sin(angle));
            }
        });
        return tensor;
    }

    /// <summary>SplitMix64's finaliser: consecutive counters give independent-looking 64-bit values.</summary>
    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
