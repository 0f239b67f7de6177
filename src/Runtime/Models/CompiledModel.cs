using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

/// <summary>Receives named intermediate values (the schema's taps) while a model runs.</summary>
public interface IActivationObserver
{
    /// <summary>Whether to download this value; a tap nobody wants costs nothing.</summary>
    bool Wants(string name);

    void Observe(string name, HostTensor value);
}

/// <summary>
/// What every generated model shares: the backend it launches on, input checking, and taps. The graph
/// itself — weights, shapes and the op list — is generated from a schema (src/Generator).
/// </summary>
public abstract class CompiledModel
{
    protected CompiledModel(IBackend backend) => _backend = backend;

    // Named like a field on purpose: generated code reads as "_backend.Linear(...)".
    protected readonly IBackend _backend;

    public IBackend Backend => _backend;

    public abstract ModelDescriptor Info { get; }

    /// <summary>The generated methods ("forward"; a VAE's "encode" and "decode"), first the main one.</summary>
    public abstract IReadOnlyList<ModelEntry> Entries { get; }

    /// <summary>Input names of the first entry, in the order its method takes them.</summary>
    public IReadOnlyList<string> InputNames => Entries[0].InputNames;

    /// <summary>Runs an entry on named inputs; the outputs belong to the caller (dispose them).</summary>
    public abstract IReadOnlyDictionary<string, DeviceTensor> Run(
        string entry, IReadOnlyDictionary<string, DeviceTensor> inputs, IActivationObserver? observer = null);

    /// <summary>Runs the first entry.</summary>
    public IReadOnlyDictionary<string, DeviceTensor> Run(
        IReadOnlyDictionary<string, DeviceTensor> inputs, IActivationObserver? observer = null) =>
        Run(Entries[0].Name, inputs, observer);

    /// <summary>
    /// A generated op's output, a training pass's saved activations and activation gradients included: the backend's
    /// activation storage (bf16 on CUDA in bf16 precision; the training ops read and write it), float32 for a graph that
    /// asks for float32 activations.
    /// </summary>
    protected DeviceTensor Allocate(params int[] shape) =>
        Info.Float32Activations ? _backend.Allocate(shape) : _backend.AllocateActivation(shape);

    /// <summary>
    /// A generated op's output that stays float32 under bf16 activations (the generator picks them: the residual stream
    /// and per-sample vectors, see ModelEmitter.KeepsFloat32).
    /// </summary>
    protected DeviceTensor AllocateFloat32(params int[] shape) => _backend.Allocate(shape);

    /// <summary>
    /// One training pass on named inputs (see the generated ForwardBackward): the forward with
    /// <see cref="Training"/>'s adapters, dLoss/dOutput from <paramref name="outputGradient"/>, then gradients.
    /// </summary>
    public void ForwardBackward(IReadOnlyDictionary<string, DeviceTensor> inputs, Func<DeviceTensor, DeviceTensor> outputGradient) =>
        ForwardBackward(Entries[0].Name, inputs, outputGradient);

    /// <summary>
    /// One training pass of an entry (a VAE's "encode" or "decode"). Where the schema lists the entry's
    /// "input_gradients" and <paramref name="inputGradients"/> is given, the gradients of those inputs are put there
    /// by input name (the caller disposes them): a decoder's dLatent, for the encoder's pass to continue from.
    /// </summary>
    public virtual void ForwardBackward(string entry, IReadOnlyDictionary<string, DeviceTensor> inputs, Func<DeviceTensor, DeviceTensor> outputGradient,
        IDictionary<string, DeviceTensor>? inputGradients = null) =>
        throw new NotSupportedException($"{Info.Name} has no training pass: its graph (schemas/{Info.SchemaFile}) names no trainable layers");

    /// <summary>The adapters and weights being trained; null when the model only runs.</summary>
    public TrainingState? Training { get; set; }

    private ITrainingBackend TrainingBackend => _backend as ITrainingBackend
        ?? throw new NotSupportedException($"the {_backend.Name} backend has no training ops (ITrainingBackend): train with --device cpu or --device cuda");

    /// <summary>A gradient buffer in activation storage, zero-filled: contributions add into it.</summary>
    protected DeviceTensor Zeros(params int[] shape)
    {
        var tensor = Allocate(shape);
        TrainingBackend.Zero(tensor);
        return tensor;
    }

    /// <summary>
    /// Adds the module's adapters to a linear layer's output: y[.., rows] += s·(x·Aᵀ)·Bᵀ. Returns each x·Aᵀ, which the
    /// backward pass needs, or null when the module has no adapter.
    /// </summary>
    protected LoraActivations? ApplyLora(View y, View x, string module)
    {
        if (Training == null || !Training.Adapters.TryGetValue(module, out var adapters)) return null;
        var activations = new LoraActivations();
        // Products take x, y and x·Aᵀ in their activation storage (bf16 words included) as they are.
        foreach (var adapter in adapters)
        {
            var down = Allocate(x.Batch, x.Rows, adapter.Rank);
            activations.Downs.Add(down);
            TrainingBackend.Gemm(down, x, false, adapter.A, true, 1f, 0f);
            TrainingBackend.Gemm(y.Columns(adapter.RowOffset, adapter.Rows), down, false, adapter.B, true, adapter.Scale, 1f);
        }
        return activations;
    }

    /// <summary>
    /// The adapters' share of a linear layer's backward pass, given dy and the forward's x and x·Aᵀ, per adapter on its
    /// rows: dB += s·dyᵀ·(x·Aᵀ), dA += (s·dy·B)ᵀ·x, and dx += (s·dy·B)·A when dx is wanted.
    /// </summary>
    protected void LoraBackward(string module, LoraActivations? activations, View? dx, View dy, View x)
    {
        if (activations == null || Training == null || !Training.Adapters.TryGetValue(module, out var adapters)) return;
        var training = TrainingBackend;
        for (int i = 0; i < adapters.Count; i++)
        {
            var adapter = adapters[i];
            var rows = dy.Columns(adapter.RowOffset, adapter.Rows);
            training.Gemm(adapter.GradB, rows, true, activations.Downs[i], false, adapter.Scale, 1f);
            using var dDown = Allocate(x.Batch, x.Rows, adapter.Rank);
            training.Gemm(dDown, rows, false, adapter.B, false, adapter.Scale, 0f);
            training.Gemm(adapter.GradA, dDown, true, x, false, 1f, 1f);
            if (dx is View target) training.Gemm(target, dDown, false, adapter.A, false, 1f, 1f);
        }
    }

    /// <summary>dW += dyᵀ·x and db += Σ dy for a layer trained whole (summed over the batch).</summary>
    protected void WeightBackward(string weightKey, string? biasKey, View dy, View x)
    {
        if (Training == null) return;
        if (Training.WeightGradients.TryGetValue(weightKey, out var weightGradient))
            TrainingBackend.Gemm(weightGradient, dy, true, x, false, 1f, 1f);
        if (biasKey != null && Training.WeightGradients.TryGetValue(biasKey, out var biasGradient))
            TrainingBackend.SumRows(biasGradient.AsView().Reshape(1, 1, biasGradient.Shape[0]), dy, 1f);
    }

    /// <summary>The gradient buffer of a weight trained whole, or null when this run does not train it.</summary>
    protected DeviceTensor? WeightGradient(string weightKey) =>
        Training != null && Training.WeightGradients.TryGetValue(weightKey, out var gradient) ? gradient : null;

    /// <summary>Disposes what a block of the training pass allocated (a null is an adapter-less layer's activations).</summary>
    protected static void Free(params IDisposable?[] values)
    {
        foreach (var value in values) value?.Dispose();
    }

    /// <summary>The training backend's kernels, for generated backward code.</summary>
    protected ITrainingBackend Backward => TrainingBackend;

    /// <summary>The kernels training every weight needs beyond a LoRA's (norm scales, convolutions, group norms).</summary>
    protected IFullTrainingBackend FullBackward => _backend as IFullTrainingBackend
        ?? throw new NotSupportedException(
            $"training these weights of {Info.Name} (norm scales, convolutions or group norms) needs kernels the {_backend.Name} backend does not have yet: " +
            "it trains LoRAs; full-weight and autoencoder training run with --device cpu");

    /// <summary>A runtime size read off an input: dimension <paramref name="axis"/> of its tensor.</summary>
    protected static int SizeOf(View input, int axis, string inputName)
    {
        int[] shape = input.Tensor.Shape;
        if (axis >= shape.Length)
            throw new ArgumentException($"input '{inputName}' has shape {HostTensor.FormatShape(shape)}; it needs at least {axis + 1} dimensions");
        return shape[axis];
    }

    /// <summary>
    /// A runtime size that an input dimension is a multiple of (an image of height 8·h gives h), with an
    /// error that says which multiple is needed.
    /// </summary>
    protected static int SizeOf(View input, int axis, string inputName, int factor, int offset, string sizeName)
    {
        int dim = SizeOf(input, axis, inputName);
        if (dim - offset <= 0 || (dim - offset) % factor != 0)
            throw new ArgumentException(
                $"input '{inputName}' has {dim} along axis {axis}; it must be {factor}·{sizeName}{(offset == 0 ? "" : $" + {offset}")} " +
                $"(a multiple of {factor}{(offset == 0 ? "" : $" plus {offset}")})");
        return (dim - offset) / factor;
    }

    /// <summary>Checks a whole, dense input against its declared shape, naming the schema's sizes on mismatch.</summary>
    protected void CheckInput(string inputName, View input, int[] expected, string declared)
    {
        int[] actual = input.Tensor.Shape;
        if (!input.IsContiguous || input.ElementCount != input.Tensor.Length)
            throw new ArgumentException($"input '{inputName}' must be a whole tensor, not a view");
        if (!actual.AsSpan().SequenceEqual(expected))
            throw new ArgumentException(
                $"{Info.Name}: input '{inputName}' has shape {HostTensor.FormatShape(actual)} but the schema declares {declared} = {HostTensor.FormatShape(expected)} here");
    }

    protected static DeviceTensor RequireInput(IReadOnlyDictionary<string, DeviceTensor> inputs, string name, string modelName) =>
        inputs.TryGetValue(name, out var tensor)
            ? tensor
            : throw new ArgumentException($"{modelName} needs input '{name}' (got {string.Join(", ", inputs.Keys)})");

    protected void Observe(IActivationObserver? observer, string name, View value, int[] shape)
    {
        if (observer == null || !observer.Wants(name)) return;
        observer.Observe(name, _backend.Download(value, shape));
    }

    protected static DeviceTensor Weight(IReadOnlyDictionary<string, DeviceTensor> weights, string key) =>
        weights.TryGetValue(key, out var tensor)
            ? tensor
            : throw new KeyNotFoundException($"weight '{key}' was not loaded");
}

/// <summary>One generated method of a model.</summary>
public sealed record ModelEntry(string Name, IReadOnlyList<string> InputNames, IReadOnlyList<string> OutputNames);

/// <summary>A compiled model of the build, for choosing one by name or by a checkpoint's contents.</summary>
public sealed record CompiledModelInfo(
    ModelDescriptor Descriptor,
    Func<IBackend, IReadOnlyDictionary<string, DeviceTensor>, CompiledModel> Create);
