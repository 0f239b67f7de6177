using System.Text;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// Puts a checkpoint's tensors on a backend under a model's parameter names. Everything is checked before the
/// first upload: a wrong file costs a second and one complete error message, not minutes of copying and a crash.
/// Float tensors go to the backend as stored; fp8 and GGUF-quantized tensors are decoded (exactly) and go up as
/// float32, unless a <see cref="BasePrecision"/> asks for the matrices to be held quantized.
/// </summary>
public static class WeightLoader
{
    private const int ListedPerProblem = 20;

    /// <summary>Matrices in float32; vectors as stored (every backend widens those to float32).</summary>
    private static readonly BasePrecision FloatMaster = new(TensorFormat.F32);

    /// <param name="precision">
    /// How weight matrices are held (see <see cref="BasePrecision"/>); null: as stored, quantized ones decoded.
    /// </param>
    /// <param name="canonicalKey">A file's key under the model's names (<see cref="ModelDescriptor.CanonicalKey"/>: another tool's naming).</param>
    /// <param name="keepFloat">
    /// Parameters held in float32 whatever the precision and the stored dtype: weights trained in place (img_in with
    /// --train-img-in), whose optimizer updates need a float32 master copy beside a bf16 or quantized base.
    /// </param>
    public static IReadOnlyDictionary<string, DeviceTensor> Load(
        IReadOnlyList<ParameterInfo> table,
        IReadOnlyList<IWeightFile> files,
        IBackend backend,
        IProgress<(int done, int total)>? progress = null,
        IReadOnlyDictionary<string, HostTensor>? deltas = null,
        IReadOnlyDictionary<string, HostTensor>? replacements = null,
        Func<string, bool>? ignored = null,
        BasePrecision? precision = null,
        Func<string, bool>? keepFloat = null,
        Func<string, string>? canonicalKey = null)
    {
        if (files.Count == 0)
            throw new ArgumentException("no weight files were given", nameof(files));
        Dictionary<string, CheckpointTensor> found = Validate(table, files, ignored ?? (_ => false), canonicalKey ?? (key => key));
        RequireFits(table, deltas, "delta", nameof(deltas));
        RequireFits(table, replacements, "replacement", nameof(replacements));

        var loaded = new Dictionary<string, DeviceTensor>(StringComparer.Ordinal);
        try
        {
            foreach (ParameterInfo parameter in table)
            {
                HostTensor? replacement = replacements?.GetValueOrDefault(parameter.Name);
                HostTensor? delta = replacement == null ? deltas?.GetValueOrDefault(parameter.Name) : null;
                CheckpointTensor tensor = found[parameter.Name];
                BasePrecision? held = keepFloat?.Invoke(parameter.Name) == true ? FloatMaster : precision;
                loaded.Add(parameter.Name, Upload(backend, tensor, replacement, delta, held, parameter));
                progress?.Report((loaded.Count, table.Count));
            }
        }
        catch
        {
            // A half-loaded model is useless and its device memory may be what the retry needs.
            foreach (DeviceTensor uploaded in loaded.Values)
                uploaded.Dispose();
            throw;
        }
        return loaded;
    }

    /// <summary>
    /// Bytes a CPU backend holds for the table's weights when loaded from <paramref name="files"/> under
    /// <paramref name="precision"/>: the quantized bytes of matrices held quantized, float32 for every other tensor (and for
    /// parameters no file has, which loading will report).
    /// </summary>
    public static long HeldBytes(IReadOnlyList<ParameterInfo> table, IReadOnlyList<IWeightFile> files, BasePrecision precision)
    {
        var stored = StoredFormats(files);
        return table.Sum(p => BlockFormat(precision, stored, p) is { } quantized
            ? quantized.ByteCount(p.Shape) ?? 0
            : HostTensor.ElementCount(p.Shape) * sizeof(float));
    }

    /// <summary>
    /// The table's weight matrices that loading from <paramref name="files"/> under <paramref name="precision"/> keeps in
    /// quantized blocks on a backend that holds them (<see cref="IBackend.HoldsQuantizedWeights"/>).
    /// </summary>
    public static HashSet<string> QuantizedMatrices(IReadOnlyList<ParameterInfo> table, IReadOnlyList<IWeightFile> files, BasePrecision precision)
    {
        var stored = StoredFormats(files);
        return table.Where(p => p.Shape.Length == 2 && BlockFormat(precision, stored, p) != null).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
    }

    private static Dictionary<string, TensorFormat> StoredFormats(IReadOnlyList<IWeightFile> files)
    {
        var stored = new Dictionary<string, TensorFormat>(StringComparer.Ordinal);
        foreach (IWeightFile file in files)
            foreach (CheckpointTensor tensor in CheckpointKeys.Of(file))
                if (tensor.Stored.Format is { } format) stored.TryAdd(tensor.Key, format);
        return stored;
    }

    /// <summary>The quantized format a parameter is held in under <paramref name="precision"/>, or null when it is held as floats.</summary>
    private static TensorFormat? BlockFormat(BasePrecision precision, Dictionary<string, TensorFormat> stored, ParameterInfo parameter) =>
        precision.FormatFor(stored.GetValueOrDefault(parameter.Name, TensorFormat.F32), parameter) is { } held
        && held.AsDType() == null && !precision.DecodeAtLoad ? held : null;

    /// <summary>Every delta or replacement names a weight of the table and has its shape.</summary>
    private static void RequireFits(IReadOnlyList<ParameterInfo> table, IReadOnlyDictionary<string, HostTensor>? tensors, string what, string argument)
    {
        if (tensors == null) return;
        foreach (var (key, tensor) in tensors)
        {
            var parameter = table.FirstOrDefault(p => p.Name == key)
                ?? throw new ArgumentException($"a weight {what} names '{key}', which the model does not have", argument);
            if (!parameter.Shape.AsSpan().SequenceEqual(tensor.Shape))
                throw new ArgumentException($"the {what} for '{key}' is {HostTensor.FormatShape(tensor.Shape)}, the weight {HostTensor.FormatShape(parameter.Shape)}", argument);
        }
    }

    /// <summary>
    /// The stored bytes as they are when nothing changes them; otherwise the replacement, or W + ΔW (a LoRA merged at
    /// load time), in float32, stored back in the checkpoint's dtype so a bf16 model stays bf16 on the device (rounded to
    /// nearest even like PyTorch). Decoded fp8 and block-quantized weights go up as float32, which holds every value they
    /// define exactly. A precision holds a matrix in its format: a quantized one kept in its blocks (the stored bytes when
    /// the file already holds it so and nothing changes it; a merged LoRA is quantized again with the sum), or quantized
    /// and decoded at load when asked.
    /// </summary>
    private static DeviceTensor Upload(IBackend backend, CheckpointTensor tensor, HostTensor? replacement, HostTensor? delta, BasePrecision? precision,
        ParameterInfo parameter)
    {
        StoredTensor stored = tensor.Stored;
        int[] shape = (int[])stored.Shape.Clone();
        TensorFormat storedFormat = stored.Format!.Value;
        DType? native = storedFormat.AsDType();
        bool changed = replacement != null || delta != null;
        // A scaled fp8 checkpoint's weight is its stored values times a scale: float bytes cannot go up as stored then.
        bool unscaled = stored.Scale == 1f;
        TensorFormat? held = precision?.FormatFor(storedFormat, parameter);
        if (held is { } same && same == storedFormat && !changed && (same.AsDType() != null ? unscaled : !precision!.DecodeAtLoad && shape.Length == 2))
        {
            if (same.AsDType() is DType dtype) return backend.UploadWeight(shape, dtype, tensor.File.GetStoredBytes(stored));
            return backend.UploadQuantizedWeight(shape, new QuantizedBlocks(same, tensor.File.GetStoredBytes(stored).ToArray(), stored.Scale, stored.ElementCount));
        }
        if (!changed && unscaled && held == null && native is DType nativeType)
            return backend.UploadWeight(shape, nativeType, tensor.File.GetStoredBytes(stored));

        float[] values = replacement?.Data ?? tensor.File.ReadFloat32(stored).Data;
        if (delta != null)
            for (int i = 0; i < values.Length; i++) values[i] += delta.Data[i];
        if (held is { } format && (changed || format != storedFormat))
            return Hold(backend, shape, values, format, precision!.DecodeAtLoad);
        DType floatType = native ?? DType.F32;
        return backend.UploadWeight(shape, floatType, DTypeEncoding.Encode(values, floatType));
    }

    /// <summary>
    /// Uploads float32 <paramref name="values"/> held in <paramref name="format"/>: a float dtype as that dtype; a quantized
    /// format quantized by our quantizers and kept in its blocks when the tensor is a matrix, else, or with
    /// <paramref name="decodeAtLoad"/>, decoded back to float32.
    /// </summary>
    public static DeviceTensor Hold(IBackend backend, int[] shape, float[] values, TensorFormat format, bool decodeAtLoad)
    {
        if (format.AsDType() is DType dtype) return backend.UploadWeight(shape, dtype, DTypeEncoding.Encode(values, dtype));
        QuantizedBlocks blocks = QuantizationPlan.Quantize(format, values);
        if (!decodeAtLoad && shape.Length == 2) return backend.UploadQuantizedWeight(shape, blocks);
        return backend.UploadWeight(shape, DType.F32, DTypeEncoding.Encode(blocks.Decode(), DType.F32));
    }

    private static Dictionary<string, CheckpointTensor> Validate(IReadOnlyList<ParameterInfo> table, IReadOnlyList<IWeightFile> files,
        Func<string, bool> ignored, Func<string, string> canonicalKey)
    {
        var expected = new Dictionary<string, ParameterInfo>(StringComparer.Ordinal);
        foreach (ParameterInfo parameter in table)
        {
            if (!expected.TryAdd(parameter.Name, parameter))
                throw new ArgumentException($"the parameter table names '{parameter.Name}' twice", nameof(table));
        }

        var found = new Dictionary<string, CheckpointTensor>(StringComparer.Ordinal);
        var inSeveralFiles = new List<string>();
        foreach (IWeightFile file in files)
        {
            foreach (CheckpointTensor stored in CheckpointKeys.Of(file))
            {
                var tensor = stored with { Key = canonicalKey(stored.Key) };
                if (!found.TryAdd(tensor.Key, tensor))
                    inSeveralFiles.Add($"{tensor.Key}: in {found[tensor.Key].File.Path} and {file.Path}");
            }
        }

        var missing = new List<string>();
        var misShaped = new List<string>();
        var unloadable = new List<string>();
        foreach (ParameterInfo parameter in table)
        {
            if (!found.TryGetValue(parameter.Name, out CheckpointTensor? tensor))
                missing.Add($"{parameter.Name} {HostTensor.FormatShape(parameter.Shape)}");
            else if (!tensor.Shape.AsSpan().SequenceEqual(parameter.Shape))
                misShaped.Add($"{parameter.Name}: the model expects {HostTensor.FormatShape(parameter.Shape)}, " +
                    $"{FileName(tensor.File)} has {HostTensor.FormatShape(tensor.Shape)}");
            else if (tensor.Stored.Format is null)
                unloadable.Add($"{parameter.Name}: stored as {tensor.DTypeName} in {FileName(tensor.File)}; only float, fp8 and GGUF-quantized weights load");
        }
        var unexpected = found.Values.Where(t => !expected.ContainsKey(t.Key) && !ignored(t.Key))
            .Select(t => $"{t.Key} {HostTensor.FormatShape(t.Shape)} in {FileName(t.File)}")
            .ToList();

        if (missing.Count + misShaped.Count + unloadable.Count + unexpected.Count + inSeveralFiles.Count == 0)
            return found;

        var message = new StringBuilder();
        message.AppendLine($"The weights in {string.Join(", ", files.Select(f => $"'{f.Path}'"))} do not fit the model's {table.Count} parameters.");
        // A prefix explains every line below at once, so it comes first.
        foreach (string hint in PrefixHints(files, expected, found))
            message.AppendLine(hint);
        AppendList(message, "missing (the model needs them; no file has them)", missing);
        AppendList(message, "unexpected (in a file; the model has no such parameter)", unexpected);
        AppendList(message, "with the wrong shape", misShaped);
        AppendList(message, "in a dtype that cannot be loaded", unloadable);
        AppendList(message, "in two files (each weight must come from one file)", inSeveralFiles);
        throw new WeightMismatchException(message.ToString().TrimEnd(), missing, unexpected, misShaped, inSeveralFiles, unloadable);
    }

    private static void AppendList(StringBuilder message, string what, List<string> items)
    {
        if (items.Count == 0) return;
        message.AppendLine($"{items.Count} {what}:");
        foreach (string item in items.Take(ListedPerProblem))
            message.AppendLine($"  {item}");
        if (items.Count > ListedPerProblem)
            message.AppendLine($"  … and {items.Count - ListedPerProblem} more");
    }

    /// <summary>A prefix on every key of a file is the usual reason nothing matches: name it and say what to do.</summary>
    private static IEnumerable<string> PrefixHints(
        IReadOnlyList<IWeightFile> files, Dictionary<string, ParameterInfo> expected, Dictionary<string, CheckpointTensor> found)
    {
        foreach (IWeightFile file in files)
        {
            var keys = found.Values.Where(t => t.File == file).Select(t => t.Key).ToList();
            if (CheckpointKeys.CommonPrefix(keys) is not { } prefix || expected.Keys.Any(k => k.StartsWith(prefix, StringComparison.Ordinal)))
                continue;

            int matchWithoutPrefix = keys.Count(k => expected.ContainsKey(k[prefix.Length..]));
            string stripped = CheckpointKeys.StripsComfyUiPrefix(file) ? $" (after removing '{CheckpointKeys.ComfyUiPrefix}')" : "";
            if (matchWithoutPrefix > 0)
                yield return $"Every tensor in '{file.Path}'{stripped} starts with '{prefix}', which the model's names do not; " +
                    $"without it {matchWithoutPrefix} of {keys.Count} names match. Save the file again without the prefix.";
            else if (prefix == "transformer.")
                yield return $"Every tensor in '{file.Path}' starts with 'transformer.': it is a diffusers-format file, whose names and layout " +
                    "differ from the original checkpoint names the model uses. Load the original single-file checkpoint instead.";
            else
                yield return $"Every tensor in '{file.Path}'{stripped} starts with '{prefix}' and none matches the model's names even without it: " +
                    "is this file a checkpoint of this model?";
        }

        int bundled = files.Sum(f => f.StoredTensors.Count(t => t.Name.StartsWith(CheckpointKeys.ComfyUiPrefix, StringComparison.Ordinal)));
        if (bundled > 0 && !files.Any(CheckpointKeys.StripsComfyUiPrefix))
            yield return $"{bundled} tensors start with '{CheckpointKeys.ComfyUiPrefix}' beside others: the file bundles several models " +
                "(a ComfyUI all-in-one checkpoint). Load the model's own file instead.";
    }

    private static string FileName(IWeightFile file) => Path.GetFileName(file.Path);
}
