using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// An optimiser's whole state by name, so a checkpoint can hold it and a resumed run continue bit for bit:
/// float32 tensors named "&lt;parameter&gt;.&lt;slot&gt;" and float64 scalars (step counts, Prodigy's d).
/// </summary>
public sealed record OptimizerState(string Optimizer, IReadOnlyDictionary<string, HostTensor> Tensors, IReadOnlyDictionary<string, double> Scalars);

/// <summary>Updates trainable parameters from their gradients, one call per optimiser step.</summary>
public interface IOptimizer : IDisposable
{
    /// <summary>"adamw" or "prodigy": what checkpoints and metadata record.</summary>
    string Name { get; }

    /// <summary>Steps taken so far (a step the optimiser skipped, as Prodigy does on an all-zero gradient, does not count).</summary>
    int StepCount { get; }

    /// <summary>One update with this step's learning rate (the schedule's value; the optimiser keeps no lr of its own).</summary>
    void Step(IReadOnlyList<TrainableParameter> parameters, double learningRate);

    OptimizerState SaveState(IReadOnlyList<TrainableParameter> parameters);

    /// <summary>Replaces the state with a saved one; every parameter must have its slots in it.</summary>
    void LoadState(OptimizerState state, IReadOnlyList<TrainableParameter> parameters);
}

/// <summary>
/// torch.optim.AdamW over the backend's fused step; moments live on the device beside the parameters. The defaults
/// are torch's (weight decay 0.01); training runs take theirs from <see cref="OptimizerSettings"/>.
/// </summary>
public sealed class AdamW(ITrainingBackend backend, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8, double weightDecay = 0.01) : IOptimizer
{
    public const double DefaultLearningRate = 1e-4;

    private readonly Dictionary<string, (DeviceTensor First, DeviceTensor Second)> _moments = new(StringComparer.Ordinal);

    public string Name => "adamw";
    public int StepCount { get; private set; }

    public void Step(IReadOnlyList<TrainableParameter> parameters, double learningRate)
    {
        StepCount++;
        foreach (var parameter in parameters)
        {
            var (first, second) = Moments(parameter);
            backend.AdamWStep(parameter.Value, parameter.Gradient, first, second, StepCount,
                (float)learningRate, (float)beta1, (float)beta2, (float)epsilon, (float)weightDecay);
        }
    }

    public OptimizerState SaveState(IReadOnlyList<TrainableParameter> parameters)
    {
        var tensors = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        foreach (var parameter in parameters)
        {
            var (first, second) = Moments(parameter);
            tensors[parameter.Name + ".exp_avg"] = TensorTransfer.Download(backend, first);
            tensors[parameter.Name + ".exp_avg_sq"] = TensorTransfer.Download(backend, second);
        }
        var scalars = new Dictionary<string, double> { ["step"] = StepCount };
        foreach (var (name, value) in Hyperparameters()) scalars[OptimizerStates.HyperparameterPrefix + name] = value;
        return new OptimizerState(Name, tensors, scalars);
    }

    public void LoadState(OptimizerState state, IReadOnlyList<TrainableParameter> parameters)
    {
        OptimizerStates.RequireKind(state, Name);
        OptimizerStates.RequireSameHyperparameters(state, Hyperparameters());
        foreach (var parameter in parameters)
        {
            var (first, second) = Moments(parameter);
            TensorTransfer.Overwrite(backend, first, OptimizerStates.Slot(state, parameter, "exp_avg"));
            TensorTransfer.Overwrite(backend, second, OptimizerStates.Slot(state, parameter, "exp_avg_sq"));
        }
        StepCount = checked((int)OptimizerStates.Scalar(state, "step"));
    }

    private IEnumerable<(string Name, double Value)> Hyperparameters() =>
        [("beta1", beta1), ("beta2", beta2), ("eps", epsilon), ("weight_decay", weightDecay)];

    private (DeviceTensor First, DeviceTensor Second) Moments(TrainableParameter parameter)
    {
        if (!_moments.TryGetValue(parameter.Name, out var moments))
            _moments[parameter.Name] = moments = (TensorTransfer.Zeros(backend, parameter.Value.Shape), TensorTransfer.Zeros(backend, parameter.Value.Shape));
        return moments;
    }

    public void Dispose()
    {
        foreach (var (first, second) in _moments.Values)
        {
            first.Dispose();
            second.Dispose();
        }
        _moments.Clear();
    }
}

internal static class OptimizerStates
{
    /// <summary>Scalars under this prefix are the optimiser's settings, saved so a resume with other flags is refused.</summary>
    public const string HyperparameterPrefix = "hp.";

    /// <summary>
    /// A resume must continue with the settings it was saved with, or it is not the same run. States saved before the
    /// settings were recorded have none and are accepted.
    /// </summary>
    public static void RequireSameHyperparameters(OptimizerState state, IEnumerable<(string Name, double Value)> current)
    {
        foreach (var (name, value) in current)
            if (state.Scalars.TryGetValue(HyperparameterPrefix + name, out double saved) && !saved.Equals(value))
                throw new InvalidDataException(
                    $"the checkpoint's {state.Optimizer} ran with {name} = {saved.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, " +
                    $"this run has {value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}: resume with the same optimizer flags");
    }

    public static void RequireKind(OptimizerState state, string name)
    {
        if (state.Optimizer != name)
            throw new InvalidDataException($"the saved optimiser state is {state.Optimizer}'s; this run uses {name} (pass the same --optimizer to resume)");
    }

    public static HostTensor Slot(OptimizerState state, TrainableParameter parameter, string slot)
    {
        string key = parameter.Name + "." + slot;
        if (!state.Tensors.TryGetValue(key, out var tensor))
            throw new InvalidDataException($"the saved {state.Optimizer} state has no '{key}': it was saved for other trainable parameters");
        if (tensor.Length != parameter.Length)
            throw new InvalidDataException($"the saved '{key}' has {tensor.Length} elements, {parameter.Name} has {parameter.Length}");
        return tensor;
    }

    public static double Scalar(OptimizerState state, string name) =>
        state.Scalars.TryGetValue(name, out double value) ? value
            : throw new InvalidDataException($"the saved {state.Optimizer} state has no scalar '{name}'");
}
