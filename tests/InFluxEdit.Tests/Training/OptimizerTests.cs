using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class OptimizerTests
{
    /// <summary>
    /// prodigyopt 1.0's Prodigy.step with its defaults (Adam betas, beta3 = √beta2, no weight decay, no bias
    /// correction, no safeguard warm-up, unlimited growth), in float64 and one loop per line of the reference, for
    /// any number of parameter tensors.
    /// </summary>
    private sealed class ProdigyReference(double initialD = 1e-6)
    {
        private const double Beta1 = 0.9, Beta2 = 0.999, Eps = 1e-8;
        private static readonly double Beta3 = Math.Sqrt(Beta2);
        private readonly double d0 = initialD;
        public double D = initialD, DMax = initialD, DNumerator;
        private double[][]? _p0, _s, _expAvg, _expAvgSq;

        public void Step(double[][] p, double[][] g, double lr)
        {
            _p0 ??= p.Select(x => (double[])x.Clone()).ToArray();
            _s ??= p.Select(x => new double[x.Length]).ToArray();
            _expAvg ??= p.Select(x => new double[x.Length]).ToArray();
            _expAvgSq ??= p.Select(x => new double[x.Length]).ToArray();
            double dlr = D * lr;
            DNumerator *= Beta3;
            double dDenom = 0;
            for (int t = 0; t < p.Length; t++)
            {
                double dot = 0;
                for (int i = 0; i < p[t].Length; i++) dot += g[t][i] * (_p0[t][i] - p[t][i]);
                DNumerator += D / d0 * dlr * dot;
                for (int i = 0; i < p[t].Length; i++)
                {
                    _expAvg[t][i] = _expAvg[t][i] * Beta1 + D * (1 - Beta1) * g[t][i];
                    _expAvgSq[t][i] = _expAvgSq[t][i] * Beta2 + D * D * (1 - Beta2) * g[t][i] * g[t][i];
                    _s[t][i] = _s[t][i] * Beta3 + D / d0 * dlr * g[t][i];
                    dDenom += Math.Abs(_s[t][i]);
                }
            }
            if (dDenom == 0) return;
            double dHat = DNumerator / dDenom;
            if (D == d0) D = Math.Max(D, dHat);
            DMax = Math.Max(DMax, dHat);
            D = DMax;
            for (int t = 0; t < p.Length; t++)
                for (int i = 0; i < p[t].Length; i++)
                    // Parameters are float32 in torch: early steps of 1e-6 move them by a few ulps, and ⟨g, x0 − x⟩
                    // sees exactly those rounded moves.
                    p[t][i] = (float)(p[t][i] - dlr * _expAvg[t][i] / (Math.Sqrt(_expAvgSq[t][i]) + D * Eps));
        }
    }

    private static TrainableParameter Parameter(CpuBackend backend, string name, float[] values) =>
        new(name, backend.Upload(new HostTensor([values.Length], values)), backend.Upload(new HostTensor(values.Length)));

    [Fact]
    public void Prodigy_follows_the_reference_algorithm_on_a_quadratic()
    {
        using var backend = new CpuBackend();
        var random = new TrainingRandom(21);
        var curvature = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, 40).Select(_ => 0.5 + random.NextDouble()).ToArray()).ToArray();
        var start = curvature.Select(c => c.Select(_ => (float)random.NextGaussian()).ToArray()).ToArray();
        var parameters = start.Select((values, t) => Parameter(backend, "p" + t, (float[])values.Clone())).ToList();
        using var prodigy = new Prodigy(backend);
        var reference = new ProdigyReference();
        var p64 = start.Select(v => v.Select(x => (double)x).ToArray()).ToArray();
        var dHistory = new List<double>();
        for (int step = 0; step < 25; step++)
        {
            // f = Σ c·x²/2: g = c·x, evaluated at each implementation's own parameters.
            var g32 = parameters.Select((p, t) => TensorTransfer.Download(backend, p.Value).Data.Select((x, i) => (float)(curvature[t][i] * x)).ToArray()).ToArray();
            for (int t = 0; t < parameters.Count; t++) TensorTransfer.Overwrite(backend, parameters[t].Gradient, new HostTensor([g32[t].Length], g32[t]));
            var g64 = p64.Select((x, t) => x.Select((v, i) => curvature[t][i] * v).ToArray()).ToArray();
            prodigy.Step(parameters, 1.0);
            reference.Step(p64, g64, 1.0);
            prodigy.D.ShouldBe(reference.D, Math.Abs(reference.D) * 1e-4);
            dHistory.Add(prodigy.D);
        }
        for (int t = 0; t < parameters.Count; t++)
        {
            var actual = TensorTransfer.Download(backend, parameters[t].Value).Data;
            for (int i = 0; i < actual.Length; i++) ((double)actual[i]).ShouldBe(p64[t][i], 1e-4 + 1e-3 * Math.Abs(p64[t][i]));
        }
        dHistory.ShouldBe(dHistory.Order().ToList(), "d never decreases");
        dHistory[^1].ShouldBeGreaterThan(1e-6 * 100, "d grows from d0 when the parameters make progress");
        foreach (var p in parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
    }

    [Fact]
    public void Prodigy_skips_an_all_zero_gradient_without_counting_the_step()
    {
        using var backend = new CpuBackend();
        var parameter = Parameter(backend, "p", [1f, 2f]);
        using var prodigy = new Prodigy(backend);
        prodigy.Step([parameter], 1.0);
        prodigy.StepCount.ShouldBe(0);
        TensorTransfer.Download(backend, parameter.Value).Data.ShouldBe([1f, 2f]);
        parameter.Value.Dispose();
        parameter.Gradient.Dispose();
    }

    [Fact]
    public void AdamW_state_survives_save_and_load()
    {
        using var backend = new CpuBackend();
        float[] start = [0.5f, -1f, 2f];
        float[] gradient = [0.1f, -0.3f, 0.7f];
        TrainableParameter Fresh() => Parameter(backend, "w", (float[])start.Clone());
        var a = Fresh();
        var b = Fresh();
        using var first = new AdamW(backend);
        using var second = new AdamW(backend);
        foreach (var p in new[] { a, b }) TensorTransfer.Overwrite(backend, p.Gradient, new HostTensor([3], gradient));
        first.Step([a], 1e-2);
        first.Step([a], 1e-2);
        second.LoadState(first.SaveState([a]), [b]);
        TensorTransfer.Overwrite(backend, b.Value, TensorTransfer.Download(backend, a.Value));
        first.Step([a], 1e-2);
        second.Step([b], 1e-2);
        second.StepCount.ShouldBe(3);
        TensorTransfer.Download(backend, b.Value).Data.ShouldBe(TensorTransfer.Download(backend, a.Value).Data);
        foreach (var p in new[] { a, b }) { p.Value.Dispose(); p.Gradient.Dispose(); }
    }

    [Fact]
    public void Schedules_follow_their_definitions()
    {
        new LearningRateSchedule(ScheduleKind.Constant, 2e-4).At(1000).ShouldBe(2e-4);
        var warmup = new LearningRateSchedule(ScheduleKind.Warmup, 1e-4, WarmupSteps: 10);
        warmup.At(0).ShouldBe(0);
        warmup.At(5).ShouldBe(0.5e-4, 1e-18);
        warmup.At(10).ShouldBe(1e-4);
        warmup.At(500).ShouldBe(1e-4);
        var cosine = new LearningRateSchedule(ScheduleKind.Cosine, 1e-4, WarmupSteps: 10, TotalSteps: 110);
        cosine.At(10).ShouldBe(1e-4);
        cosine.At(60).ShouldBe(0.5e-4, 1e-15); // half-way: cos(π/2) = 0
        cosine.At(110).ShouldBe(0, 1e-18);
        Enumerable.Range(10, 100).Select(cosine.At).ShouldBe(Enumerable.Range(10, 100).Select(cosine.At).OrderDescending());
    }

    [Fact]
    public void Clipping_scales_the_global_norm_down_to_the_limit_and_leaves_small_gradients()
    {
        using var backend = new CpuBackend();
        var p = Parameter(backend, "a", [0f, 0f]);
        var q = Parameter(backend, "b", [0f]);
        TensorTransfer.Overwrite(backend, p.Gradient, new HostTensor([2], [3f, 4f]));
        TensorTransfer.Overwrite(backend, q.Gradient, new HostTensor([1], [12f]));
        Gradients.ClipGlobalNorm(backend, [p, q], 1.0).ShouldBe(13.0, 1e-12); // √(9 + 16 + 144)
        Gradients.GlobalNorm(backend, [p, q]).ShouldBe(1.0 * 13 / (13 + 1e-6), 1e-6);
        TensorTransfer.Download(backend, p.Gradient).Data[0].ShouldBe(3f / 13, 1e-6f);
        Gradients.ClipGlobalNorm(backend, [p, q], 10.0);
        TensorTransfer.Download(backend, q.Gradient).Data[0].ShouldBe(12f / 13, 1e-6f);
        TensorTransfer.Overwrite(backend, q.Gradient, new HostTensor([1], [float.NaN]));
        double.IsNaN(Gradients.ClipGlobalNorm(backend, [p, q], 1.0)).ShouldBeTrue();
        foreach (var t in new[] { p, q }) { t.Value.Dispose(); t.Gradient.Dispose(); }
    }

    [Fact]
    public void Accumulation_leaves_the_mean_gradient_and_mean_loss()
    {
        using var backend = new CpuBackend();
        var p = Parameter(backend, "a", [0f, 0f]);
        using var accumulator = new GradientAccumulator(backend, [p], 3);
        float[][] microGradients = [[1f, 2f], [4f, -2f], [7f, 3f]];
        double[] losses = [0.5, 1.0, 3.0];
        for (int i = 0; i < 3; i++)
        {
            TensorTransfer.Overwrite(backend, p.Gradient, new HostTensor([2], microGradients[i]));
            accumulator.Add(losses[i]);
        }
        accumulator.Finish().ShouldBe(1.5, 1e-12);
        var mean = TensorTransfer.Download(backend, p.Gradient).Data;
        mean[0].ShouldBe(4f, 1e-6f);
        mean[1].ShouldBe(1f, 1e-6f);
        Should.Throw<InvalidOperationException>(() => accumulator.Finish());
        p.Value.Dispose();
        p.Gradient.Dispose();
    }
}
