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

/// <summary>torch.optim.AdamW over the backend's fused step; moments live on the device beside the parameters.</summary>
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
        return new OptimizerState(Name, tensors, new Dictionary<string, double> { ["step"] = StepCount });
    }

    public void LoadState(OptimizerState state, IReadOnlyList<TrainableParameter> parameters)
    {
        OptimizerStates.RequireKind(state, Name);
        foreach (var parameter in parameters)
        {
            var (first, second) = Moments(parameter);
            TensorTransfer.Overwrite(backend, first, OptimizerStates.Slot(state, parameter, "exp_avg"));
            TensorTransfer.Overwrite(backend, second, OptimizerStates.Slot(state, parameter, "exp_avg_sq"));
        }
        StepCount = checked((int)OptimizerStates.Scalar(state, "step"));
    }

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
