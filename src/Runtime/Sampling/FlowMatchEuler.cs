using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Sampling;

/// <summary>
/// Euler integration of a flow-matching velocity field along a schedule (BFL's <c>denoise</c> loop): one model
/// call per step, x ← x + (t_next − t_cur)·v. On the host: the latent is small; the model call does the heavy work
/// on the device.
/// </summary>
public static class FlowMatchEuler
{
    /// <param name="start">x at schedule[0] (noise); not modified.</param>
    /// <param name="schedule">Timesteps from high to low, N + 1 values for N steps.</param>
    /// <param name="model">The velocity at (t, x); called with t = schedule[i] for i = 0..N−1, in float32 as the model takes it.</param>
    /// <param name="progress">Reports (steps done, steps) after every step.</param>
    public static HostTensor Sample(HostTensor start, IReadOnlyList<double> schedule, Func<float, HostTensor, HostTensor> model,
        IProgress<(int Done, int Total)>? progress = null)
    {
        if (schedule.Count < 2)
            throw new ArgumentException($"a schedule needs at least two timesteps (one step); got {schedule.Count}");
        var x = new HostTensor((int[])start.Shape.Clone(), (float[])start.Data.Clone());
        int steps = schedule.Count - 1;
        for (int i = 0; i < steps; i++)
        {
            double current = schedule[i], next = schedule[i + 1];
            HostTensor velocity = model((float)current, x);
            if (!velocity.Shape.AsSpan().SequenceEqual(x.Shape))
                throw new ArgumentException(
                    $"the model returned a velocity of shape {HostTensor.FormatShape(velocity.Shape)} for x of shape {HostTensor.FormatShape(x.Shape)}");
            double dt = next - current;
            float[] data = x.Data, v = velocity.Data;
            for (int k = 0; k < data.Length; k++) data[k] = (float)(data[k] + dt * v[k]);
            progress?.Report((i + 1, steps));
        }
        return x;
    }
}
