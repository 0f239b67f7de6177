using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// Prodigy with Adam-style updates (Mishchenko &amp; Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
/// Learner", the Adam algorithm of the paper as its reference implementation prodigyopt 1.0 runs it): the step size d
/// is estimated from how far the parameters moved along the gradients, d = max over time of
/// d_coef · Σ(d/d0)·dlr·⟨g, x0 − x⟩ / ‖s‖₁, so lr stays 1.0 and only scales the estimate. Every tensor is float32 on
/// the host (as torch's state is float32); the scalar accumulators are float64.
/// Defaults are the reference's: d0 1e-6, d_coef 1, betas (0.9, 0.999), beta3 = √beta2, eps 1e-8, weight decay 0
/// (decoupled), no bias correction, no safeguard warm-up, unlimited growth.
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
    private readonly bool _biasCorrection, _safeguardWarmup;
    private readonly Dictionary<string, Slots> _slots = new(StringComparer.Ordinal);

    public Prodigy(IBackend backend, double beta1 = 0.9, double beta2 = 0.999, double? beta3 = null, double epsilon = 1e-8,
        double weightDecay = 0, double d0 = 1e-6, double dCoefficient = 1.0, double growthRate = double.PositiveInfinity,
        bool biasCorrection = false, bool safeguardWarmup = false)
    {
        if (d0 <= 0) throw new ArgumentOutOfRangeException(nameof(d0), d0, "d0 must be positive: the step divides by it");
        _backend = backend;
        (_beta1, _beta2, _beta3) = (beta1, beta2, beta3 ?? Math.Sqrt(beta2));
        (_epsilon, _weightDecay, _d0, _dCoefficient, _growthRate) = (epsilon, weightDecay, d0, dCoefficient, growthRate);
        (_biasCorrection, _safeguardWarmup) = (biasCorrection, safeguardWarmup);
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
        double biasCorrection = _biasCorrection
            ? Math.Sqrt(1 - Math.Pow(_beta2, StepCount + 1)) / (1 - Math.Pow(_beta1, StepCount + 1))
            : 1.0;
        double d = D;
        double dlr = d * learningRate * biasCorrection;
        double numerator = DNumerator * _beta3;
        double denominator = 0;

        var values = new float[parameters.Count][];
        for (int index = 0; index < parameters.Count; index++)
        {
            var parameter = parameters[index];
            float[] x = values[index] = TensorTransfer.Download(_backend, parameter.Value).Data;
            float[] g = TensorTransfer.Download(_backend, parameter.Gradient).Data;
            if (!_slots.TryGetValue(parameter.Name, out var slots))
                _slots[parameter.Name] = slots = new Slots(x.Length, (float[])x.Clone());
            if (learningRate <= 0) continue;

            double dot = 0;
            for (int i = 0; i < x.Length; i++) dot += (double)g[i] * (slots.Initial[i] - x[i]);
            numerator += d / _d0 * dlr * dot;

            float firstWeight = (float)(d * (1 - _beta1)), secondWeight = (float)(d * d * (1 - _beta2));
            float beta1 = (float)_beta1, beta2 = (float)_beta2, beta3 = (float)_beta3;
            float sWeight = (float)(_safeguardWarmup ? d / _d0 * d : d / _d0 * dlr);
            double absoluteSum = 0;
            for (int i = 0; i < x.Length; i++)
            {
                if (_beta1 > 0) slots.ExpAvg[i] = slots.ExpAvg[i] * beta1 + g[i] * firstWeight;
                slots.ExpAvgSq[i] = slots.ExpAvgSq[i] * beta2 + g[i] * g[i] * secondWeight;
                slots.S[i] = slots.S[i] * beta3 + g[i] * sWeight;
                absoluteSum += Math.Abs(slots.S[i]);
            }
            denominator += absoluteSum;
        }
        DNumerator = numerator;

        // No gradient anywhere yet: the reference returns before the step (and before counting it).
        if (denominator == 0) return;

        if (learningRate > 0)
        {
            DHat = _dCoefficient * numerator / denominator;
            if (D == _d0) D = Math.Max(D, DHat);
            DMax = Math.Max(DMax, DHat);
            D = Math.Min(DMax, D * _growthRate);
        }

        // The update uses dlr from the d this step started with, as the reference does.
        for (int index = 0; index < parameters.Count; index++)
        {
            var parameter = parameters[index];
            var slots = _slots[parameter.Name];
            float[] x = values[index];
            float[]? g = _beta1 > 0 ? null : TensorTransfer.Download(_backend, parameter.Gradient).Data;
            float denominatorShift = (float)(D * _epsilon);
            float decay = (float)(-_weightDecay * dlr);
            float step = (float)(-dlr);
            float plainStep = (float)(-dlr * D);
            for (int i = 0; i < x.Length; i++)
            {
                float denom = MathF.Sqrt(slots.ExpAvgSq[i]) + denominatorShift;
                if (_weightDecay != 0) x[i] += x[i] * decay;
                x[i] += g is null ? step * (slots.ExpAvg[i] / denom) : plainStep * (g[i] / denom);
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
        return new OptimizerState(Name, tensors, scalars);
    }

    public void LoadState(OptimizerState state, IReadOnlyList<TrainableParameter> parameters)
    {
        OptimizerStates.RequireKind(state, Name);
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

    public void Dispose() => _slots.Clear();
}
