using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>The build has no compiled model of a family the command needs (its schema has not landed yet).</summary>
public sealed class MissingModelFamilyException(string family)
    : InvalidOperationException($"this build has no compiled '{family}' model (no schema in schemas/ declares that family)")
{
    public string Family { get; } = family;
}

/// <summary>A compiled model with its weights on a backend; disposing frees the weights.</summary>
public sealed class LoadedModel : IDisposable
{
    private readonly IReadOnlyDictionary<string, DeviceTensor> _weights;

    private readonly UnmergedLora? _unmerged;

    private LoadedModel(CompiledModel model, IReadOnlyDictionary<string, DeviceTensor> weights, string reason, UnmergedLora? unmerged = null)
    {
        Model = model;
        _weights = weights;
        Reason = reason;
        _unmerged = unmerged;
        if (unmerged != null) model.Training = unmerged.State;
    }

    /// <summary>A model of <paramref name="info"/> over weights already on <paramref name="backend"/> (a memory plan's placed ones), owning them.</summary>
    internal static LoadedModel Over(CompiledModelInfo info, IBackend backend, IReadOnlyDictionary<string, DeviceTensor> weights, string reason) =>
        new(info.Create(backend, weights), weights, reason);

    public CompiledModel Model { get; }

    /// <summary>The loaded weights by checkpoint key (training updates some in place).</summary>
    public IReadOnlyDictionary<string, DeviceTensor> Weights => _weights;

    /// <summary>Why this compiled model was chosen for the checkpoint, for the user.</summary>
    public string Reason { get; }

    /// <summary>
    /// Which compiled model of <paramref name="family"/> a checkpoint is for: the one named <paramref name="modelName"/>,
    /// or, without a name, the one <see cref="ModelRecognizer"/> recognises among the family. Reads only the header,
    /// so a command can check its other inputs against the model before minutes of loading.
    /// </summary>
    public static (CompiledModelInfo Info, string Reason) Resolve(string checkpoint, string family, IReadOnlyList<CompiledModelInfo> catalog,
        string? modelName = null)
    {
        var candidates = catalog.Where(m => m.Descriptor.Family == family).ToList();
        if (candidates.Count == 0) throw new MissingModelFamilyException(family);
        if (modelName != null)
        {
            var named = candidates.FirstOrDefault(m => m.Descriptor.Name == modelName)
                ?? throw new ArgumentException(
                    $"no compiled {family} model '{modelName}' (compiled: {string.Join(", ", candidates.Select(m => m.Descriptor.Name))})");
            return (named, "named on the command line");
        }
        using var file = WeightFile.Open(checkpoint);
        var match = ModelRecognizer.Recognize(file, candidates.Select(m => m.Descriptor));
        return (candidates.First(m => m.Descriptor == match.Model), match.Reason);
    }

    /// <summary>Resolves (see <see cref="Resolve"/>) and loads; the weights are checked against the schema before any upload.</summary>
    public static LoadedModel Load(string checkpoint, string family, IBackend backend, IReadOnlyList<CompiledModelInfo> catalog,
        string? modelName = null, IProgress<(int Done, int Total)>? progress = null)
    {
        var (info, reason) = Resolve(checkpoint, family, catalog, modelName);
        return Load(checkpoint, info, reason, backend, progress);
    }

    /// <summary>
    /// Loads a resolved model; <paramref name="deltas"/> (LoRAs) are merged into their weights on the way (into a weight
    /// held quantized by summing in float32 and quantizing the sum again). <paramref name="precision"/> holds the weight
    /// matrices quantized (see <see cref="BasePrecision"/>); those <paramref name="keepFloat"/> names are held in float32 whatever
    /// the precision and the file (weights trained in place). <paramref name="unmerged"/> low-rank LoRA pieces stay apart,
    /// applied by the forward as adapters (<see cref="UnmergedLora"/>) and freed with the model.
    /// </summary>
    public static LoadedModel Load(string checkpoint, CompiledModelInfo info, string reason, IBackend backend,
        IProgress<(int Done, int Total)>? progress = null, IReadOnlyDictionary<string, HostTensor>? deltas = null,
        BasePrecision? precision = null, Func<string, bool>? keepFloat = null, IReadOnlyList<LowRankDelta>? unmerged = null)
    {
        using var file = WeightFile.Open(checkpoint);
        var weights = WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend, progress, deltas, ignored: info.Descriptor.Ignores,
            precision: precision, keepFloat: keepFloat, canonicalKey: info.Descriptor.CanonicalKey);
        UnmergedLora? adapters = null;
        try
        {
            if (unmerged is { Count: > 0 }) adapters = UnmergedLora.Upload(backend, unmerged, info.Descriptor);
            return new LoadedModel(info.Create(backend, weights), weights, reason, adapters);
        }
        catch
        {
            adapters?.Dispose();
            foreach (var w in weights.Values) w.Dispose();
            throw;
        }
    }

    /// <summary>Each of the checkpoint's tensors' stored format, under the model's names (for planning its memory).</summary>
    public static IReadOnlyDictionary<string, TensorFormat> StoredFormats(string checkpoint, CompiledModelInfo info)
    {
        using var file = WeightFile.Open(checkpoint);
        return WeightLoader.StoredFormats([file], info.Descriptor.CanonicalKey);
    }

    /// <summary>
    /// The checkpoint's weight matrices that <paramref name="precision"/> keeps in quantized blocks on a backend that holds
    /// them, from the file's header alone: where a LoRA merged at load would have to be quantized again.
    /// </summary>
    public static HashSet<string> QuantizedMatrices(string checkpoint, CompiledModelInfo info, BasePrecision precision)
    {
        using var file = WeightFile.Open(checkpoint);
        return WeightLoader.QuantizedMatrices(info.Descriptor.Parameters, [file], precision);
    }

    /// <summary>
    /// Bytes the CPU backend will hold for the checkpoint's weights under <paramref name="precision"/> (float32 for every
    /// tensor not held quantized), from the file's header alone, for the memory check before loading.
    /// </summary>
    public static long HeldWeightBytes(string checkpoint, CompiledModelInfo info, BasePrecision? precision)
    {
        if (precision == null) return Runtime.Training.MemoryEstimate.Weights(info.Descriptor);
        using var file = WeightFile.Open(checkpoint);
        return WeightLoader.HeldBytes(info.Descriptor.Parameters, [file], precision);
    }

    /// <summary>
    /// A model stored as several files (Hugging Face shards such as a FLUX folder's text_encoder_2/), recognised among
    /// the family by <paramref name="configPath"/> (the folder's config.json, when there is one) and the tensors of all
    /// files together, then loaded.
    /// </summary>
    public static LoadedModel LoadFiles(IReadOnlyList<string> paths, string? configPath, string family, IBackend backend,
        IReadOnlyList<CompiledModelInfo> catalog, IProgress<(int Done, int Total)>? progress = null)
    {
        var candidates = catalog.Where(m => m.Descriptor.Family == family).ToList();
        if (candidates.Count == 0) throw new MissingModelFamilyException(family);
        var files = new List<IWeightFile>();
        try
        {
            foreach (string path in paths) files.Add(WeightFile.Open(path));
            var match = ModelRecognizer.Recognize(files, configPath == null ? null : File.ReadAllText(configPath), candidates.Select(m => m.Descriptor));
            var info = candidates.First(m => m.Descriptor == match.Model);
            // An fp8 or GGUF encoder (t5xxl_fp8_e4m3fn, a T5 Q8_0 GGUF) stays quantized in memory: T5-XXL decoded is 19 GB.
            var weights = WeightLoader.Load(info.Descriptor.Parameters, files, backend, progress, ignored: info.Descriptor.Ignores,
                precision: BasePrecision.Keep, canonicalKey: info.Descriptor.CanonicalKey);
            try
            {
                return new LoadedModel(info.Create(backend, weights), weights, match.Reason);
            }
            catch
            {
                foreach (var w in weights.Values) w.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var file in files) file.Dispose();
        }
    }

    public void Dispose()
    {
        _unmerged?.Dispose();
        foreach (var w in _weights.Values) w.Dispose();
    }
}
