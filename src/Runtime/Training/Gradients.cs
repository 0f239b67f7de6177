using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Runtime.Training;

/// <summary>Whole-model operations on the gradients of all trainable parameters.</summary>
public static class Gradients
{
    /// <summary>√Σ‖g‖² over every parameter's gradient, accumulated in float64; NaN or ∞ when any gradient has one.</summary>
    public static double GlobalNorm(ITrainingBackend backend, IEnumerable<TrainableParameter> parameters)
    {
        return Math.Sqrt(backend.SumOfSquares(parameters.Select(p => View.Of(p.Gradient)).ToArray()));
    }

    /// <summary>
    /// torch.nn.utils.clip_grad_norm_: when the global norm exceeds <paramref name="maxNorm"/>, every gradient is
    /// scaled by maxNorm / (norm + 1e-6). Returns the norm before clipping; a non-finite norm leaves the gradients
    /// untouched for the caller's non-finite policy to handle (scaling would only spread the NaN).
    /// </summary>
    public static double ClipGlobalNorm(ITrainingBackend backend, IReadOnlyList<TrainableParameter> parameters, double maxNorm)
    {
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the clipping norm must be positive");
        double norm = GlobalNorm(backend, parameters);
        if (!double.IsFinite(norm)) return norm;
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
            foreach (var parameter in parameters) backend.Scale(View.Of(parameter.Gradient), (float)coefficient);
        return norm;
    }
}

/// <summary>
/// Gradient accumulation over N micro-batches: the loss-and-gradients call assigns each micro-batch's gradients to
/// the parameters' Gradient tensors; <see cref="Add"/> sums them into buffers of its own and <see cref="Finish"/>
/// leaves the mean in the Gradient tensors, as one batch N times larger with a mean loss would have given.
/// </summary>
public sealed class GradientAccumulator : IDisposable
{
    private readonly ITrainingBackend _backend;
    private readonly IReadOnlyList<TrainableParameter> _parameters;
    private readonly DeviceTensor[] _sums;
    private double _lossSum;

    public GradientAccumulator(ITrainingBackend backend, IReadOnlyList<TrainableParameter> parameters, int microBatches)
    {
        if (microBatches < 1) throw new ArgumentOutOfRangeException(nameof(microBatches), microBatches, "accumulate over at least one micro-batch");
        _backend = backend;
        _parameters = parameters;
        MicroBatches = microBatches;
        _sums = parameters.Select(p => backend.Allocate((int[])p.Gradient.Shape.Clone())).ToArray();
    }

    public int MicroBatches { get; }

    /// <summary>Micro-batches added since the last <see cref="Finish"/>.</summary>
    public int Count { get; private set; }

    /// <summary>Takes the gradients now in the parameters and the loss of the micro-batch that produced them.</summary>
    public void Add(double loss)
    {
        if (Count == MicroBatches) throw new InvalidOperationException($"all {MicroBatches} micro-batches were added; call Finish first");
        for (int i = 0; i < _parameters.Count; i++)
        {
            View gradient = View.Of(_parameters[i].Gradient), sum = View.Of(_sums[i]);
            if (Count == 0) _backend.Copy(sum, gradient);
            else _backend.Add(sum, sum, gradient);
        }
        _lossSum += loss;
        Count++;
    }

    /// <summary>Writes the mean gradients into the parameters and returns the mean loss; starts the next accumulation.</summary>
    public double Finish()
    {
        if (Count != MicroBatches) throw new InvalidOperationException($"{Count} of {MicroBatches} micro-batches were added");
        float mean = 1f / MicroBatches;
        for (int i = 0; i < _parameters.Count; i++)
        {
            _backend.Copy(View.Of(_parameters[i].Gradient), View.Of(_sums[i]));
            if (MicroBatches > 1) _backend.Scale(View.Of(_parameters[i].Gradient), mean);
        }
        double loss = _lossSum / MicroBatches;
        _lossSum = 0;
        Count = 0;
        return loss;
    }

    public void Dispose()
    {
        foreach (var sum in _sums) sum.Dispose();
    }
}
