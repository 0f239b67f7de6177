using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// Prodigy with Adam-style updates (Mishchenko &amp; Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
/// Learner", the Adam algorithm of the paper as its reference implementation prodigyopt's Prodigy.step runs it): the
/// step size d is estimated from how far the parameters moved along the gradients, d = max over time of
/// d_coef · Σ(d/d0)·dlr·⟨g, x0 − x⟩ / ‖s‖₁, so lr stays 1.0 and only scales the estimate. Every tensor is float32 on
/// the host (as torch's state is float32); the scalar accumulators are float64, and each element's update is
/// computed in float64 and rounded once.
/// Defaults are the reference's: d0 1e-6, d_coef 1, betas (0.9, 0.999), beta3 = √beta2, eps 1e-8, weight decay 0
/// (decoupled when set), no bias correction, no safeguard warm-up, unlimited growth.
/// </summary>
public sealed class Prodigy : IOptimizer
{
    public const double DefaultLearningRate = 1.0;

    private sealed class Slots(int length, float[] initial)
    {
        public readonly float[] Initial = initial;
        public readonly float[] S = new float[length];
        public readonly float[] ExpAvg = new float[length];
        public readonly float[] ExpAvgSq = new float[length];
    }

    private readonly IBackend _backend;
    private readonly double _beta1, _beta2, _beta3, _epsilon, _weightDecay, _d0, _dCoefficient, _growthRate;
    private readonly bool _decouple, _biasCorrection, _safeguardWarmup;
    private readonly Dictionary<string, Slots> _slots = new(StringComparer.Ordinal);

    public Prodigy(IBackend backend, double beta1 = 0.9, double beta2 = 0.999, double? beta3 = null, double epsilon = 1e-8,
        double weightDecay = 0, bool decouple = true, double d0 = 1e-6, double dCoefficient = 1.0, double growthRate = double.PositiveInfinity,
        bool biasCorrection = false, bool safeguardWarmup = false)
    {
        if (d0 <= 0) throw new ArgumentOutOfRangeException(nameof(d0), d0, "d0 must be positive: the step divides by it");
        _backend = backend;
        (_beta1, _beta2, _beta3) = (beta1, beta2, beta3 ?? Math.Sqrt(beta2));
        (_epsilon, _weightDecay, _d0, _dCoefficient, _growthRate) = (epsilon, weightDecay, d0, dCoefficient, growthRate);
        (_decouple, _biasCorrection, _safeguardWarmup) = (decouple, biasCorrection, safeguardWarmup);
        D = DMax = d0;
    }

    public string Name => "prodigy";
    public int StepCount { get; private set; }

    /// <summary>The current step-size estimate (starts at d0, never falls).</summary>
    public double D { get; private set; }

    public double DMax { get; private set; }
    public double DNumerator { get; private set; }
    public double DHat { get; private set; }

    public void Step(IReadOnlyList<TrainableParameter> parameters, double learningRate)
    {
        // Bias correction counts the steps taken (prodigyopt's k), from 1.
        double biasCorrection = _biasCorrection
            ? Math.Sqrt(1 - Math.Pow(_beta2, StepCount + 1)) / (1 - Math.Pow(_beta1, StepCount + 1))
            : 1.0;
        double d = D;
        double dlr = d * learningRate * biasCorrection;
        double numerator = DNumerator * _beta3;
        double denominator = 0;
        // The safeguard leaves lr (and the bias correction) out of s, so a warm-up's lr 0 cannot stall d.
        double sWeight = _safeguardWarmup ? d / _d0 * d : d / _d0 * dlr;
        bool coupledDecay = _weightDecay != 0 && !_decouple;

        var values = new float[parameters.Count][];
        var gradients = new float[parameters.Count][];
        for (int index = 0; index < parameters.Count; index++)
        {
            var parameter = parameters[index];
            float[] x = values[index] = TensorTransfer.Download(_backend, parameter.Value).Data;
            float[] g = gradients[index] = TensorTransfer.Download(_backend, parameter.Gradient).Data;
            // Coupled decay is an L2 term in the gradient itself: every use of g below (the estimate, the moments,
            // the plain step when beta1 = 0) sees it, as the reference adds it to p.grad in place.
            if (coupledDecay)
                for (int i = 0; i < g.Length; i++) g[i] = (float)(g[i] + _weightDecay * x[i]);
            if (!_slots.TryGetValue(parameter.Name, out var slots))
                _slots[parameter.Name] = slots = new Slots(x.Length, (float[])x.Clone());
            if (learningRate <= 0) continue;

            double dot = 0;
            for (int i = 0; i < x.Length; i++) dot += (double)g[i] * (slots.Initial[i] - x[i]);
            numerator += d / _d0 * dlr * dot;

            double firstWeight = d * (1 - _beta1), secondWeight = d * d * (1 - _beta2);
            double absoluteSum = 0;
            for (int i = 0; i < x.Length; i++)
            {
                double gi = g[i];
                if (_beta1 > 0) slots.ExpAvg[i] = (float)(slots.ExpAvg[i] * _beta1 + gi * firstWeight);
                slots.ExpAvgSq[i] = (float)(slots.ExpAvgSq[i] * _beta2 + gi * gi * secondWeight);
                slots.S[i] = (float)(slots.S[i] * _beta3 + gi * sWeight);
                absoluteSum += Math.Abs(slots.S[i]);
            }
            denominator += absoluteSum;
        }

        // No gradient anywhere yet (or lr 0): the reference returns before the step, keeping its numerator and not
        // counting the step.
        if (denominator == 0) return;
        DNumerator = numerator;

        DHat = _dCoefficient * numerator / denominator;
        if (D == _d0) D = Math.Max(D, DHat);
        DMax = Math.Max(DMax, DHat);
        D = Math.Min(DMax, D * _growthRate);

        // The update uses dlr from the d this step started with and the new d in eps and the plain step, as the
        // reference does.
        double denominatorShift = D * _epsilon;
        double decay = _weightDecay != 0 && _decouple ? -_weightDecay * dlr : 0;
        for (int index = 0; index < parameters.Count; index++)
        {
            var parameter = parameters[index];
            var slots = _slots[parameter.Name];
            float[] x = values[index], g = gradients[index];
            for (int i = 0; i < x.Length; i++)
            {
                double denom = Math.Sqrt(slots.ExpAvgSq[i]) + denominatorShift;
                // The decay and the step are two in-place float32 updates in the reference.
                float decayed = decay == 0 ? x[i] : (float)(x[i] + x[i] * decay);
                x[i] = (float)(decayed - (_beta1 > 0 ? dlr * slots.ExpAvg[i] / denom : dlr * D * g[i] / denom));
            }
            TensorTransfer.Overwrite(_backend, parameter.Value, new HostTensor((int[])parameter.Value.Shape.Clone(), x));
        }
        StepCount++;
    }

    public OptimizerState SaveState(IReadOnlyList<TrainableParameter> parameters)
    {
        var tensors = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        foreach (var parameter in parameters)
        {
            if (!_slots.TryGetValue(parameter.Name, out var slots)) continue;
            int[] shape = (int[])parameter.Value.Shape.Clone();
            tensors[parameter.Name + ".p0"] = new HostTensor(shape, (float[])slots.Initial.Clone());
            tensors[parameter.Name + ".s"] = new HostTensor(shape, (float[])slots.S.Clone());
            tensors[parameter.Name + ".exp_avg"] = new HostTensor(shape, (float[])slots.ExpAvg.Clone());
            tensors[parameter.Name + ".exp_avg_sq"] = new HostTensor(shape, (float[])slots.ExpAvgSq.Clone());
        }
        var scalars = new Dictionary<string, double>
        {
            ["step"] = StepCount, ["d"] = D, ["d_max"] = DMax, ["d_numerator"] = DNumerator, ["d_hat"] = DHat,
        };
        foreach (var (name, value) in Hyperparameters()) scalars[OptimizerStates.HyperparameterPrefix + name] = value;
        return new OptimizerState(Name, tensors, scalars);
    }

    public void LoadState(OptimizerState state, IReadOnlyList<TrainableParameter> parameters)
    {
        OptimizerStates.RequireKind(state, Name);
        OptimizerStates.RequireSameHyperparameters(state, Hyperparameters());
        _slots.Clear();
        foreach (var parameter in parameters)
        {
            // Before the first step there are no slots: they are created from the parameters then.
            if (!state.Tensors.ContainsKey(parameter.Name + ".p0")) continue;
            var slots = new Slots((int)parameter.Length, (float[])OptimizerStates.Slot(state, parameter, "p0").Data.Clone());
            OptimizerStates.Slot(state, parameter, "s").Data.CopyTo(slots.S, 0);
            OptimizerStates.Slot(state, parameter, "exp_avg").Data.CopyTo(slots.ExpAvg, 0);
            OptimizerStates.Slot(state, parameter, "exp_avg_sq").Data.CopyTo(slots.ExpAvgSq, 0);
            _slots[parameter.Name] = slots;
        }
        StepCount = checked((int)OptimizerStates.Scalar(state, "step"));
        D = OptimizerStates.Scalar(state, "d");
        DMax = OptimizerStates.Scalar(state, "d_max");
        DNumerator = OptimizerStates.Scalar(state, "d_numerator");
        DHat = OptimizerStates.Scalar(state, "d_hat");
    }

    private IEnumerable<(string Name, double Value)> Hyperparameters() =>
    [
        ("beta1", _beta1), ("beta2", _beta2), ("beta3", _beta3), ("eps", _epsilon), ("weight_decay", _weightDecay),
        ("decouple", _decouple ? 1 : 0), ("d0", _d0), ("d_coef", _dCoefficient), ("growth_rate", _growthRate),
        ("use_bias_correction", _biasCorrection ? 1 : 0), ("safeguard_warmup", _safeguardWarmup ? 1 : 0),
    ];

    public void Dispose() => _slots.Clear();
}
