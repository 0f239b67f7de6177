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

    protected DeviceTensor Allocate(params int[] shape) => _backend.Allocate(shape);

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
