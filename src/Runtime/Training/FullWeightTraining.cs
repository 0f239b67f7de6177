using System.Text.Json;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// Full-parameter training of a compiled model: every weight of its parameter table (or those a filter keeps) trained
/// whole. Builds the model's <see cref="TrainingState"/> with a zeroed gradient per weight, which the generated
/// ForwardBackward fills (each op adds its weights' gradients only when their key is there, so a LoRA run pays
/// nothing for this), and the <see cref="TrainableParameter"/> list the optimisers, clipping and
/// <see cref="TrainingCheckpoint"/> take. Model-agnostic: it reads only the descriptor's parameter table.
/// </summary>
public sealed class FullWeightTraining : IDisposable
{
    private readonly ITrainingBackend _backend;
    private readonly List<TrainableParameter> _parameters = new();

    /// <summary>
    /// Trains <paramref name="weights"/> (the tensors the model was built on, from <see cref="WritableCopies"/>) in place.
    /// Sets <paramref name="model"/>'s Training; <paramref name="include"/> picks checkpoint keys (all by default).
    /// </summary>
    public FullWeightTraining(CompiledModel model, IReadOnlyDictionary<string, DeviceTensor> weights, Func<string, bool>? include = null)
    {
        _backend = model.Backend as IFullTrainingBackend
            ?? throw new NotSupportedException($"the {model.Backend.Name} backend has no kernels for full-weight training yet (norm scales, convolutions, group norms; it trains LoRAs): use --device cpu");
        var state = new TrainingState();
        foreach (var parameter in model.Info.Parameters)
        {
            if (include != null && !include(parameter.Name)) continue;
            if (!weights.TryGetValue(parameter.Name, out var weight))
                throw new ArgumentException($"{model.Info.Name}: weight '{parameter.Name}' was not given");
            if (weight.DType != DType.F32)
                throw new NotSupportedException($"full-weight training needs float32 weights on the device; '{parameter.Name}' is {weight.DType}");
            var gradient = model.Backend.Allocate((int[])weight.Shape.Clone());
            _backend.Zero(gradient);
            state.WeightGradients[parameter.Name] = gradient;
            _parameters.Add(new TrainableParameter(parameter.Name, weight, gradient));
        }
        if (_parameters.Count == 0) throw new ArgumentException($"{model.Info.Name}: no weight was selected for training");
        model.Training = state;
        State = state;
    }

    public TrainingState State { get; }

    /// <summary>The trained weights with their gradients, in the parameter table's order.</summary>
    public IReadOnlyList<TrainableParameter> Parameters => _parameters;

    /// <summary>How many numbers train.</summary>
    public long ParameterCount => _parameters.Sum(p => p.Value.Length);

    /// <summary>Clears every gradient (after an optimiser step; gradients accumulate across passes otherwise).</summary>
    public void ZeroGradients()
    {
        foreach (var parameter in _parameters) _backend.Zero(parameter.Gradient);
    }

    /// <summary>
    /// One optimiser step on the accumulated gradients: clipped to <paramref name="maxGradientNorm"/> when given, then
    /// cleared. Returns the gradient norm before clipping.
    /// </summary>
    public double Step(IOptimizer optimizer, double learningRate, double? maxGradientNorm = null)
    {
        double norm = maxGradientNorm is double max
            ? Gradients.ClipGlobalNorm(_backend, _parameters, max)
            : Gradients.GlobalNorm(_backend, _parameters);
        optimizer.Step(_parameters, learningRate);
        ZeroGradients();
        return norm;
    }

    public void Dispose()
    {
        foreach (var parameter in _parameters) parameter.Gradient.Dispose();
        _parameters.Clear();
    }

    /// <summary>
    /// Writable float32 copies of loaded weights, to build the model that trains on: tensors from
    /// <see cref="IBackend.UploadWeight"/> are read-only by contract (a backend may keep packed copies of them, as the
    /// CPU convolution does), so they must not be updated in place. The caller disposes the copies.
    /// </summary>
    public static Dictionary<string, DeviceTensor> WritableCopies(IBackend backend, IReadOnlyDictionary<string, DeviceTensor> weights)
    {
        var copies = new Dictionary<string, DeviceTensor>(StringComparer.Ordinal);
        foreach (var (name, weight) in weights)
        {
            if (weight.DType != DType.F32)
                throw new NotSupportedException($"weight '{name}' is {weight.DType} on the {backend.Name} device; full-weight training needs float32");
            var copy = backend.Allocate((int[])weight.Shape.Clone());
            backend.Copy(copy, weight);
            copies[name] = copy;
        }
        return copies;
    }

    /// <summary>
    /// A fresh model to pretrain, initialised as PyTorch initialises its layers: every weight of two or more dimensions
    /// (a linear [out, in] or conv [out, in, kh, kw] weight) U(−1/√fan_in, 1/√fan_in), fan_in its elements per output
    /// (nn.Linear's and nn.Conv2d's default, kaiming_uniform with a = √5); one-dimensional biases ("….bias") zero and
    /// every other vector (norm scales) one. Writable float32 tensors, drawn from <paramref name="random"/> in table order.
    /// </summary>
    public static Dictionary<string, DeviceTensor> Initialize(IBackend backend, ModelDescriptor model, TrainingRandom random)
    {
        var weights = new Dictionary<string, DeviceTensor>(StringComparer.Ordinal);
        foreach (var parameter in model.Parameters)
        {
            var host = new HostTensor((int[])parameter.Shape.Clone());
            if (parameter.Shape.Length >= 2)
            {
                double bound = 1.0 / Math.Sqrt(host.Length / parameter.Shape[0]);
                for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)((random.NextDouble() * 2 - 1) * bound);
            }
            else if (!parameter.Name.EndsWith(".bias", StringComparison.Ordinal))
                Array.Fill(host.Data, 1f);
            var tensor = backend.Allocate((int[])parameter.Shape.Clone());
            TensorTransfer.Overwrite(backend, tensor, host);
            weights[parameter.Name] = tensor;
        }
        return weights;
    }

    /// <summary>
    /// Saves a model's weights as a checkpoint of its own: every key of the parameter table, in the table's dtype
    /// (bf16 for a bf16 model), with the model's params as <c>__metadata__.config</c> so that <c>inspect</c> and the
    /// loaders recognise it. Refuses NaN or ∞ before writing anything; the write itself is atomic
    /// (<see cref="SafeTensorsWriter"/>: a temporary file renamed over the target).
    /// </summary>
    public static void SaveWeights(string path, IBackend backend, ModelDescriptor model, IReadOnlyDictionary<string, DeviceTensor> weights,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var tensors = new List<RawTensor>();
        foreach (var parameter in model.Parameters)
        {
            if (!weights.TryGetValue(parameter.Name, out var weight))
                throw new ArgumentException($"{model.Name}: weight '{parameter.Name}' is missing");
            if (!weight.Shape.AsSpan().SequenceEqual(parameter.Shape))
                throw new ArgumentException($"{model.Name}: weight '{parameter.Name}' is {HostTensor.FormatShape(weight.Shape)}, the model declares {HostTensor.FormatShape(parameter.Shape)}");
            var host = TensorTransfer.Download(backend, weight);
            foreach (float value in host.Data)
                if (!float.IsFinite(value))
                    throw new NonFiniteCheckpointException($"not saving {path}: weight '{parameter.Name}' holds {value}");
            tensors.Add(new RawTensor(parameter.Name, parameter.DType, parameter.Shape, DTypeEncoding.Encode(host.Data, parameter.DType)));
        }
        var header = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = "pt",
            ["config"] = "{" + string.Join(", ", model.Params.Select(p => $"{JsonSerializer.Serialize(p.Key)}: {p.Value}")) + "}",
        };
        if (metadata != null)
            foreach (var (key, value) in metadata) header[key] = value;
        SafeTensorsWriter.WriteRaw(path, tensors, header);
    }
}
