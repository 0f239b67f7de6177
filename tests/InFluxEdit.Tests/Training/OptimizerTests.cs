using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class OptimizerTests
{
    /// <summary>
    /// prodigyopt's Prodigy.step (github.com/konstmish/prodigy, prodigyopt/prodigy.py) for one parameter group, in
    /// float64 and one loop per line of the reference, every flag included. Only the parameters are rounded to float32
    /// after each step, as torch stores them: early steps of d0 = 1e-6 move them by a few ulps, and ⟨g, x0 − x⟩ sees
    /// exactly those rounded moves.
    /// </summary>
    private sealed class ProdigyReference(OptimizerSettings settings)
    {
        public double D = settings.D0, DMax = settings.D0, DNumerator, DHat;
        private int _k;
        private double[][]? _p0, _s, _expAvg, _expAvgSq;

        public void Step(double[][] p, double[][] g, double lr)
        {
            double beta1 = settings.Beta1, beta2 = settings.Beta2, beta3 = settings.Beta3 ?? Math.Sqrt(beta2), d0 = settings.D0;
            double decay = settings.WeightDecay;
            _p0 ??= p.Select(x => (double[])x.Clone()).ToArray();
            _s ??= p.Select(x => new double[x.Length]).ToArray();
            _expAvg ??= p.Select(x => new double[x.Length]).ToArray();
            _expAvgSq ??= p.Select(x => new double[x.Length]).ToArray();
            double biasCorrection = settings.BiasCorrection ? Math.Sqrt(1 - Math.Pow(beta2, _k + 1)) / (1 - Math.Pow(beta1, _k + 1)) : 1;
            double d = D, dlr = d * lr * biasCorrection;
            double dNumerator = DNumerator * beta3, deltaNumerator = 0, dDenom = 0;
            for (int t = 0; t < p.Length; t++)
            {
                if (decay != 0 && !settings.Decouple)
                    for (int i = 0; i < p[t].Length; i++) g[t][i] += decay * p[t][i];
                double dot = 0;
                for (int i = 0; i < p[t].Length; i++) dot += g[t][i] * (_p0[t][i] - p[t][i]);
                deltaNumerator += d / d0 * dlr * dot;
                for (int i = 0; i < p[t].Length; i++)
                {
                    if (beta1 > 0) _expAvg[t][i] = _expAvg[t][i] * beta1 + d * (1 - beta1) * g[t][i];
                    _expAvgSq[t][i] = _expAvgSq[t][i] * beta2 + d * d * (1 - beta2) * g[t][i] * g[t][i];
                    _s[t][i] = _s[t][i] * beta3 + (settings.SafeguardWarmup ? d / d0 * d : d / d0 * dlr) * g[t][i];
                    dDenom += Math.Abs(_s[t][i]);
                }
            }
            if (dDenom == 0) return;
            DNumerator = dNumerator + deltaNumerator;
            double dHat = DHat = settings.DCoefficient * DNumerator / dDenom;
            if (d == d0) d = Math.Max(d, dHat);
            DMax = Math.Max(DMax, dHat);
            D = d = Math.Min(DMax, d * settings.GrowthRate);
            for (int t = 0; t < p.Length; t++)
                for (int i = 0; i < p[t].Length; i++)
                {
                    double denom = Math.Sqrt(_expAvgSq[t][i]) + d * settings.Epsilon;
                    if (decay != 0 && settings.Decouple) p[t][i] = (float)(p[t][i] - decay * dlr * p[t][i]);
                    p[t][i] = (float)(p[t][i] - (beta1 > 0 ? dlr * _expAvg[t][i] / denom : dlr * d * g[t][i] / denom));
                }
            _k++;
        }
    }

    private static TrainableParameter Parameter(CpuBackend backend, string name, float[] values) =>
        new(name, backend.Upload(new HostTensor([values.Length], values)), backend.Upload(new HostTensor(values.Length)));

    /// <summary>The settings each optimiser test runs, by name: a theory's data must be serialisable.</summary>
    private static OptimizerSettings Flags(string name) => name switch
    {
        // prodigyopt's own defaults.
        "prodigy package defaults" => new OptimizerSettings
        {
            Name = "prodigy", WeightDecay = 0, BiasCorrection = false, SafeguardWarmup = false,
        },
        // The seed's train_influxedit.py and diffusers' script: lr 1, decay 1e-4 decoupled, bias correction and
        // safeguard warm-up on. These are also OptimizerSettings' defaults.
        "prodigy seed" => new OptimizerSettings { Name = "prodigy" },
        "prodigy every flag" => new OptimizerSettings
        {
            Name = "prodigy", Beta1 = 0.8, Beta2 = 0.99, Beta3 = 0.95, Epsilon = 1e-6, WeightDecay = 0.05, Decouple = false,
            DCoefficient = 2, GrowthRate = 1.05, D0 = 1e-5, // the growth limit binds: d̂ reaches ~1e-4
        },
        "prodigy beta1 0" => new OptimizerSettings { Name = "prodigy", Beta1 = 0, WeightDecay = 0.01, SafeguardWarmup = false },
        "adamw defaults" => new OptimizerSettings(),
        "adamw every flag" => new OptimizerSettings { Beta1 = 0.8, Beta2 = 0.99, Epsilon = 1e-6, WeightDecay = 0.05 },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    /// <summary>
    /// Ten steps on f = Σ c·(x − t)²/2 over two tensors, one starting at zero as a LoRA up-projection does; gradients
    /// are evaluated at each implementation's own parameters, so the two runs stay independent.
    /// </summary>
    private static (List<TrainableParameter> Parameters, double[][] Reference) RunQuadratic(CpuBackend backend, IOptimizer optimizer,
        double learningRate, Action<double[][], double[][]> referenceStep, Action<int>? afterStep = null)
    {
        var random = new TrainingRandom(21);
        var curvature = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, 40).Select(_ => 0.5 + random.NextDouble()).ToArray()).ToArray();
        var goal = curvature.Select(c => c.Select(_ => random.NextGaussian()).ToArray()).ToArray();
        var start = new[] { curvature[0].Select(_ => (float)random.NextGaussian()).ToArray(), new float[curvature[1].Length] };
        var parameters = start.Select((values, t) => Parameter(backend, "p" + t, (float[])values.Clone())).ToList();
        var p64 = start.Select(v => v.Select(x => (double)x).ToArray()).ToArray();
        for (int step = 0; step < 10; step++)
        {
            for (int t = 0; t < parameters.Count; t++)
            {
                var x = TensorTransfer.Download(backend, parameters[t].Value).Data;
                var g32 = x.Select((v, i) => (float)(curvature[t][i] * (v - goal[t][i]))).ToArray();
                TensorTransfer.Overwrite(backend, parameters[t].Gradient, new HostTensor([g32.Length], g32));
            }
            var g64 = p64.Select((x, t) => x.Select((v, i) => curvature[t][i] * (v - goal[t][i])).ToArray()).ToArray();
            optimizer.Step(parameters, learningRate);
            referenceStep(p64, g64);
            afterStep?.Invoke(step);
        }
        return (parameters, p64);
    }

    [Theory]
    [InlineData("prodigy package defaults")]
    [InlineData("prodigy seed")]
    [InlineData("prodigy every flag")]
    [InlineData("prodigy beta1 0")]
    public void Prodigy_follows_the_reference_algorithm_for_ten_steps(string flags)
    {
        var settings = Flags(flags);
        using var backend = new CpuBackend();
        using var optimizer = settings.Create(backend);
        var prodigy = (Prodigy)optimizer;
        var reference = new ProdigyReference(settings);
        var dHistory = new List<double>();
        var (parameters, expected) = RunQuadratic(backend, prodigy, 1.0, (p, g) => reference.Step(p, g, 1.0), _ =>
        {
            // d̂ every step, not only d: with bias correction and the safeguard, d can stay at d0 for the first steps.
            prodigy.DHat.ShouldBe(reference.DHat, Math.Abs(reference.DHat) * 1e-6 + 1e-18);
            prodigy.D.ShouldBe(reference.D, reference.D * 1e-6);
            dHistory.Add(prodigy.D);
        });
        for (int t = 0; t < parameters.Count; t++)
        {
            var actual = TensorTransfer.Download(backend, parameters[t].Value).Data;
            for (int i = 0; i < actual.Length; i++) ((double)actual[i]).ShouldBe(expected[t][i], 1e-6, $"{flags}: p{t}[{i}]");
        }
        prodigy.StepCount.ShouldBe(10);
        dHistory.ShouldBe(dHistory.Order().ToList(), "d never decreases");
        foreach (var p in parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
    }

    [Theory]
    [InlineData("adamw defaults")]
    [InlineData("adamw every flag")]
    public void AdamW_follows_the_reference_algorithm_for_ten_steps(string flags)
    {
        var settings = Flags(flags);
        using var backend = new CpuBackend();
        using var optimizer = settings.Create(backend);
        const double lr = 1e-2;
        double[][]? m = null, v = null;
        int step = 0;
        // torch.optim.AdamW (decoupled decay, then Adam with bias correction), float64, parameters stored as float32.
        void Reference(double[][] p, double[][] g)
        {
            m ??= p.Select(x => new double[x.Length]).ToArray();
            v ??= p.Select(x => new double[x.Length]).ToArray();
            step++;
            for (int t = 0; t < p.Length; t++)
                for (int i = 0; i < p[t].Length; i++)
                {
                    double decayed = (float)(p[t][i] * (1 - lr * settings.WeightDecay));
                    m[t][i] = settings.Beta1 * m[t][i] + (1 - settings.Beta1) * g[t][i];
                    v[t][i] = settings.Beta2 * v[t][i] + (1 - settings.Beta2) * g[t][i] * g[t][i];
                    double mHat = m[t][i] / (1 - Math.Pow(settings.Beta1, step)), vHat = v[t][i] / (1 - Math.Pow(settings.Beta2, step));
                    p[t][i] = (float)(decayed - lr * mHat / (Math.Sqrt(vHat) + settings.Epsilon));
                }
        }
        var (parameters, expected) = RunQuadratic(backend, optimizer, lr, Reference);
        for (int t = 0; t < parameters.Count; t++)
        {
            var actual = TensorTransfer.Download(backend, parameters[t].Value).Data;
            for (int i = 0; i < actual.Length; i++) ((double)actual[i]).ShouldBe(expected[t][i], 1e-6, $"{flags}: p{t}[{i}]");
        }
        optimizer.StepCount.ShouldBe(10);
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

    /// <summary>diffusers' optimization.py lr_lambda of each schedule, transcribed (warm-up shared by all).</summary>
    private static double DiffusersFactor(string name, int step, int warmup, int total, double lr, int cycles = 1, double power = 1)
    {
        if (step < warmup) return (double)step / Math.Max(1, warmup);
        double progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return name switch
        {
            "linear" => Math.Max(0.0, (double)(total - step) / Math.Max(1, total - warmup)),
            "cosine_with_restarts" => progress >= 1.0 ? 0.0 : Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((cycles * progress) % 1.0)))),
            "polynomial" => step > total ? 1e-7 / lr : ((lr - 1e-7) * Math.Pow(1 - (double)(step - warmup) / (total - warmup), power) + 1e-7) / lr,
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    [Theory]
    [InlineData("linear", 1, 1.0)]
    [InlineData("cosine_with_restarts", 1, 1.0)]
    [InlineData("cosine_with_restarts", 3, 1.0)]
    [InlineData("polynomial", 1, 1.0)]
    [InlineData("polynomial", 1, 2.0)]
    public void Schedules_follow_diffusers_get_scheduler(string name, int cycles, double power)
    {
        const double lr = 2e-4;
        const int warmup = 10, total = 130;
        var schedule = new LearningRateSchedule(LearningRateSchedule.ParseKind(name), lr, warmup, total) { Cycles = cycles, Power = power };
        for (int step = 0; step <= total + 5; step++)
            schedule.At(step).ShouldBe(lr * DiffusersFactor(name, step, warmup, total, lr, cycles, power), 1e-18, $"{name} at step {step}");
        if (name == "cosine_with_restarts")
            for (int cycle = 0; cycle < cycles; cycle++) schedule.At(warmup + cycle * (total - warmup) / cycles).ShouldBe(lr, 1e-18, "each cycle restarts at the full rate");
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
