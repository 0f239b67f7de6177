using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// What a checkpoint records besides tensors: enough to continue the run exactly (step, seed, random state, data
/// order) and to refuse a resume with other settings (method, rank, alpha, targets, base model, optimiser).
/// <see cref="DataOrder"/> is the data loader's own text (see <see cref="FormatOrder"/>); <see cref="Extra"/> carries
/// anything else a caller wants kept.
/// </summary>
public sealed record TrainingCheckpointInfo(
    int Step,
    long Seed,
    string RandomState,
    string DataOrder,
    string Method,
    int Rank,
    double Alpha,
    IReadOnlyList<string> Targets,
    string BaseModel)
{
    public IReadOnlyDictionary<string, string> Extra { get; init; } = new Dictionary<string, string>();

    public static string FormatOrder(IEnumerable<int> order) => string.Join(",", order.Select(i => i.ToString(CultureInfo.InvariantCulture)));

    public static int[] ParseOrder(string text) =>
        text.Length == 0 ? [] : text.Split(',').Select(s => int.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture)).ToArray();
}

/// <summary>A checkpoint read back: parameter values by name, the optimiser's state and the run's record.</summary>
public sealed record LoadedCheckpoint(TrainingCheckpointInfo Info, IReadOnlyDictionary<string, HostTensor> Parameters, OptimizerState Optimizer)
{
    /// <summary>Writes the saved values into the run's parameters (same names, same shapes) and the optimiser.</summary>
    public void Restore(IBackend backend, IReadOnlyList<TrainableParameter> parameters, IOptimizer optimizer)
    {
        var expected = parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var missing = expected.Where(n => !Parameters.ContainsKey(n)).ToList();
        var extra = Parameters.Keys.Where(n => !expected.Contains(n)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new InvalidDataException(
                "the checkpoint was saved for other trainable parameters (resume with the same targets, rank and --train-img-in): " +
                (missing.Count > 0 ? $"missing {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", …" : "")}" : "") +
                (missing.Count > 0 && extra.Count > 0 ? "; " : "") +
                (extra.Count > 0 ? $"not in this run {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", …" : "")}" : ""));
        foreach (var parameter in parameters)
        {
            var saved = Parameters[parameter.Name];
            if (!saved.Shape.AsSpan().SequenceEqual(parameter.Value.Shape))
                throw new InvalidDataException($"checkpoint tensor '{parameter.Name}' is {HostTensor.FormatShape(saved.Shape)}, this run has {parameter.Value}");
            TensorTransfer.Overwrite(backend, parameter.Value, saved);
        }
        optimizer.LoadState(Optimizer, parameters);
    }
}

/// <summary>A tensor about to be checkpointed holds NaN or ∞; nothing was written.</summary>
public sealed class NonFiniteCheckpointException(string message) : InvalidOperationException(message);

/// <summary>
/// A training checkpoint as one safetensors file: "param.&lt;name&gt;" for every trainable tensor, "optim.&lt;slot&gt;"
/// for the optimiser's float32 state, "optim_scalar.&lt;name&gt;" as F64 scalars (Prodigy's d must survive exactly),
/// and the run's record in <c>__metadata__</c>. Written atomically by <see cref="SafeTensorsWriter"/>.
/// </summary>
public static class TrainingCheckpoint
{
    public const string FormatName = "influxedit-training-checkpoint/1";
    private const string ParameterPrefix = "param.", OptimizerPrefix = "optim.", ScalarPrefix = "optim_scalar.";

    public static void Save(string path, IBackend backend, IReadOnlyList<TrainableParameter> parameters, IOptimizer optimizer, TrainingCheckpointInfo info)
    {
        var values = parameters.ToDictionary(p => p.Name, p => TensorTransfer.Download(backend, p.Value), StringComparer.Ordinal);
        Save(path, values, optimizer.SaveState(parameters), info);
    }

    /// <summary>Saves host tensors; throws <see cref="NonFiniteCheckpointException"/> before writing anything if one is not finite.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, HostTensor> parameters, OptimizerState optimizer, TrainingCheckpointInfo info)
    {
        var tensors = new List<RawTensor>();
        foreach (var (name, tensor) in parameters.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            RequireFinite(tensor, $"trainable tensor '{name}'", info.Step);
            tensors.Add(Float32(ParameterPrefix + name, tensor));
        }
        foreach (var (name, tensor) in optimizer.Tensors.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            RequireFinite(tensor, $"{optimizer.Optimizer} state '{name}'", info.Step);
            tensors.Add(Float32(OptimizerPrefix + name, tensor));
        }
        foreach (var (name, value) in optimizer.Scalars)
        {
            // A setting may be ∞ (Prodigy's unlimited growth rate); a state value that is not finite is a diverged run.
            if (!double.IsFinite(value) && !name.StartsWith(OptimizerStates.HyperparameterPrefix, StringComparison.Ordinal))
                throw new NonFiniteCheckpointException($"not saving the checkpoint of step {info.Step}: {optimizer.Optimizer}'s '{name}' is {value}");
            var bytes = new byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(bytes, value);
            tensors.Add(new RawTensor(ScalarPrefix + name, DType.F64, [], bytes));
        }
        SafeTensorsWriter.WriteRaw(path, tensors, Metadata(info, optimizer.Optimizer));
    }

    public static LoadedCheckpoint Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var metadata = file.Metadata;
        if (!metadata.TryGetValue("format", out var format) || format != FormatName)
            throw new InvalidDataException($"{path} is not an InFluxEdit training checkpoint (its __metadata__ format is '{format ?? "missing"}', expected '{FormatName}')");
        var parameters = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        var optimizerTensors = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        var scalars = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var entry in file.Tensors)
        {
            if (entry.Name.StartsWith(ScalarPrefix, StringComparison.Ordinal))
            {
                if (entry.DType != DType.F64 || entry.ElementCount != 1)
                    throw new InvalidDataException($"{path}: '{entry.Name}' must be one F64 value, is {entry}");
                scalars[entry.Name[ScalarPrefix.Length..]] = BinaryPrimitives.ReadDoubleLittleEndian(file.GetBytes(entry));
            }
            else if (entry.Name.StartsWith(ParameterPrefix, StringComparison.Ordinal))
                parameters[entry.Name[ParameterPrefix.Length..]] = file.ReadFloat32(entry.Name);
            else if (entry.Name.StartsWith(OptimizerPrefix, StringComparison.Ordinal))
                optimizerTensors[entry.Name[OptimizerPrefix.Length..]] = file.ReadFloat32(entry.Name);
            else
                throw new InvalidDataException($"{path}: tensor '{entry.Name}' belongs to no part of a training checkpoint");
        }
        string Required(string key) => metadata.TryGetValue(key, out var value) ? value
            : throw new InvalidDataException($"{path}: __metadata__ has no '{key}'");
        // A damaged record is the file's fault, not the resume's: each value is checked here, naming the file and key.
        T Parsed<T>(string key, Func<string, T> parse, Func<T, bool> valid, string expected)
        {
            string text = Required(key);
            try
            {
                var value = parse(text);
                if (valid(value)) return value;
            }
            catch (Exception e) when (e is FormatException or OverflowException) { }
            throw new InvalidDataException(
                $"{path}: its __metadata__ '{key}' is '{(text.Length > 60 ? text[..60] + "…" : text)}', not {expected}; the checkpoint is damaged: resume from another one of the run");
        }
        var c = CultureInfo.InvariantCulture;
        var info = new TrainingCheckpointInfo(
            Parsed("step", t => int.Parse(t, NumberStyles.Integer, c), step => step >= 0, "a step count (0 or more)"),
            Parsed("seed", t => long.Parse(t, NumberStyles.Integer, c), _ => true, "a 64-bit seed"),
            Parsed("rng_state", t => TrainingRandom.RestoreState(t).SaveState(), _ => true, "a saved random state"),
            Parsed("data_order", t => TrainingCheckpointInfo.FormatOrder(TrainingCheckpointInfo.ParseOrder(t)), _ => true, "a list of example indices"),
            Required("method"),
            Parsed("rank", t => int.Parse(t, NumberStyles.Integer, c), rank => rank >= 0, "a rank (0 or more; 0 when every weight trains)"),
            Parsed("alpha", t => double.Parse(t, NumberStyles.Float, c), double.IsFinite, "a finite alpha"),
            Required("targets").Split(',', StringSplitOptions.RemoveEmptyEntries),
            Required("base_model"))
        {
            Extra = metadata.Where(m => m.Key.StartsWith("extra.", StringComparison.Ordinal))
                .ToDictionary(m => m.Key["extra.".Length..], m => m.Value, StringComparer.Ordinal),
        };
        return new LoadedCheckpoint(info, parameters, new OptimizerState(Required("optimizer"), optimizerTensors, scalars));
    }

    private static Dictionary<string, string> Metadata(TrainingCheckpointInfo info, string optimizer)
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = FormatName,
            ["step"] = info.Step.ToString(CultureInfo.InvariantCulture),
            ["seed"] = info.Seed.ToString(CultureInfo.InvariantCulture),
            ["rng_state"] = info.RandomState,
            ["data_order"] = info.DataOrder,
            ["method"] = info.Method,
            ["rank"] = info.Rank.ToString(CultureInfo.InvariantCulture),
            ["alpha"] = info.Alpha.ToString("R", CultureInfo.InvariantCulture),
            ["targets"] = string.Join(",", info.Targets),
            ["base_model"] = info.BaseModel,
            ["optimizer"] = optimizer,
        };
        foreach (var (key, value) in info.Extra) metadata["extra." + key] = value;
        return metadata;
    }

    private static RawTensor Float32(string name, HostTensor tensor) =>
        new(name, DType.F32, (int[])tensor.Shape.Clone(), MemoryMarshal.AsBytes(tensor.Data.AsSpan()).ToArray());

    private static void RequireFinite(HostTensor tensor, string what, int step)
    {
        int index = Array.FindIndex(tensor.Data, v => !float.IsFinite(v));
        if (index >= 0)
            throw new NonFiniteCheckpointException(
                $"not saving the checkpoint of step {step}: {what} holds {tensor.Data[index]} at element {index}; the last good checkpoint is kept");
    }
}
