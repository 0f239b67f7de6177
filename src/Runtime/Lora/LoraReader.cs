using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Lora;

/// <summary>A LoRA file that does not fit the model: unknown modules, wrong shapes, missing halves, corrupt values.</summary>
public sealed class LoraMismatchException(string message) : IOException(message);

/// <summary>
/// How to read a LoRA: the user's strength, whether a key this build does not apply is an error (<paramref name="Strict"/>)
/// or skipped and reported, and the base model's weights (parameter name → float32), which DoRA and whole-weight
/// entries are relative to.
/// </summary>
/// <paramref name="DescribeOnly"/>: only say what the file holds (lora inspect): changes relative to absent base weights are not computed.
public sealed record LoraReadOptions(float Scale = 1f, bool Strict = false, Func<string, HostTensor>? BaseWeights = null, bool DescribeOnly = false);

/// <summary>
/// Reads a LoRA file in any of the layouts in circulation into <see cref="LoraContent"/> under the model's own
/// parameter names. Which layer a key names comes from <see cref="LoraNames"/> (the schema); what the tensors of one
/// adapter mean comes from their suffixes, one table below per tool that writes them; the math of each kind is one
/// method here (low rank, LoKr, LoHa, DoRA, full-weight diffs).
/// </summary>
public static class LoraReader
{
    private enum Role
    {
        Down, Up, Mid, Alpha, DoraScale, Magnitude, UpBias,
        Diff, DiffBias, SetWeight, WholeWeight, WholeBias,
        LokrW1, LokrW1A, LokrW1B, LokrW2, LokrW2A, LokrW2B, LokrT2,
        HadaW1A, HadaW1B, HadaW2A, HadaW2B, HadaT1, HadaT2,
    }

    /// <summary>Tensor suffix → role, by the tool whose files carry it; matched longest first.</summary>
    private static readonly (string Suffix, Role Role)[] Suffixes = new (string, Role)[]
    {
        // kohya sd-scripts (networks/lora_flux.py) and ComfyUI's LoRA saves: lora_up·lora_down·alpha/rank; DoRA's dora_scale.
        (".lora_down.weight", Role.Down), (".lora_up.weight", Role.Up), (".lora_mid.weight", Role.Mid), (".alpha", Role.Alpha), (".dora_scale", Role.DoraScale),
        // PEFT / diffusers / ai-toolkit: lora_B·lora_A·lora_alpha/r, lora_B's bias (lora_bias=True), DoRA's magnitude.
        (".lora_A.weight", Role.Down), (".lora_B.weight", Role.Up), (".lora_B.bias", Role.UpBias),
        (".lora_magnitude_vector", Role.Magnitude), (".lora_magnitude_vector.weight", Role.Magnitude),
        // XLabs x-flux LoRALinearLayer: up(down(x)), no alpha.
        (".down.weight", Role.Down), (".up.weight", Role.Up),
        // ComfyUI full-weight patches (comfy/lora.py): added (diff, diff_b) or replacing (set_weight).
        (".diff", Role.Diff), (".diff_b", Role.DiffBias), (".set_weight", Role.SetWeight),
        // LyCORIS LoKr: kron(w1, w2), each whole or a product w_a·w_b; LoHa: (w1_a·w1_b) ⊙ (w2_a·w2_b).
        (".lokr_w1", Role.LokrW1), (".lokr_w1_a", Role.LokrW1A), (".lokr_w1_b", Role.LokrW1B),
        (".lokr_w2", Role.LokrW2), (".lokr_w2_a", Role.LokrW2A), (".lokr_w2_b", Role.LokrW2B), (".lokr_t2", Role.LokrT2),
        (".hada_w1_a", Role.HadaW1A), (".hada_w1_b", Role.HadaW1B), (".hada_w2_a", Role.HadaW2A), (".hada_w2_b", Role.HadaW2B),
        (".hada_t1", Role.HadaT1), (".hada_t2", Role.HadaT2),
        // Whole weights (our exports before diff, the seed's flux_x_embedder.safetensors): relative to the base model.
        (".weight", Role.WholeWeight), (".bias", Role.WholeBias),
    }.OrderByDescending(s => s.Item1.Length).ToArray();

    public static Dictionary<string, HostTensor> ReadDeltas(string path, ModelDescriptor model, float userScale = 1f) =>
        Read(path, new LoraNames(model), new LoraReadOptions(userScale)).ToDeltas(model);

    /// <summary>The file's changes to the model, and what it passed over; a <see cref="LoraMismatchException"/> naming the key when it cannot be applied.</summary>
    public static LoraContent Read(string path, LoraNames names, LoraReadOptions options)
    {
        using var file = SafeTensorsFile.Open(path);
        var reader = new FileReader(path, file, names, options);
        return reader.Read();
    }

    private sealed class FileReader(string path, SafeTensorsFile file, LoraNames names, LoraReadOptions options)
    {
        private readonly ModelDescriptor _model = names.Model;
        private readonly LoraContent _content = new();
        private readonly MetadataAlpha _metadataAlpha = MetadataAlpha.From(file.Metadata);

        public LoraContent Read()
        {
            var groups = new Dictionary<string, Dictionary<Role, string>>(StringComparer.Ordinal);
            var skipped = new List<(string Key, bool TextEncoder)>();
            foreach (string key in file.Tensors.Select(t => t.Name).Concat(file.OtherTensors.Select(t => t.Name)))
            {
                var (name, role) = Split(key);
                if (role is null) { skipped.Add((key, LoraNames.IsTextEncoder(key))); continue; }
                if (!groups.TryGetValue(name, out var roles)) groups[name] = roles = new Dictionary<Role, string>();
                roles[role.Value] = key;
            }
            foreach (var (name, roles) in groups)
            {
                if (!Resolve(name, roles, out var target))
                {
                    foreach (string key in roles.Values) skipped.Add((key, LoraNames.IsTextEncoder(key)));
                    continue;
                }
                ReadAdapter(name, target, roles);
            }
            foreach (var group in skipped.GroupBy(s => (Group: LoraNames.GroupOf(s.Key), s.TextEncoder)))
                _content.Skipped.Add(group.Key.TextEncoder
                    ? new SkippedKeys(group.Key.Group, "text-encoder keys", "this build applies transformer adapters only", group.Select(g => g.Key).ToList())
                    : new SkippedKeys(group.Key.Group, $"keys naming no layer of {_model.Name}", "a LoRA for another model, or a layout this build does not read", group.Select(g => g.Key).ToList()));
            if (options.Strict && _content.Skipped.Count > 0)
                throw new LoraMismatchException($"{path} has keys this build does not apply (--strict-lora refuses them):\n  " +
                                                 string.Join("\n  ", _content.SkipReport()));
            if (_content.IsEmpty)
                throw new LoraMismatchException(
                    $"{path} has no key that applies to {_model.Name} (schemas/{_model.SchemaFile}): " +
                    (skipped.Count == 0 ? "it holds no tensors" : string.Join("; ", _content.SkipReport())) +
                    ". Is it a LoRA for this model? 'influx-cli lora inspect' lists what it holds.");
            return _content;
        }

        private static (string Name, Role? Role) Split(string key)
        {
            foreach (var (suffix, role) in Suffixes)
                if (key.EndsWith(suffix, StringComparison.Ordinal)) return (key[..^suffix.Length], role);
            // A file of one layer's bare weights: "weight", "bias".
            return key switch { "weight" => ("", Role.WholeWeight), "bias" => ("", Role.WholeBias), _ => ("", null) };
        }

        private bool Resolve(string name, Dictionary<Role, string> roles, out LoraName target)
        {
            if (name.Length > 0) return names.TryResolve(name, out target);
            var shape = roles.TryGetValue(Role.WholeWeight, out var weight) ? Shape(weight) : [Shape(roles[Role.WholeBias])[0], -1];
            return names.TryResolveBare(path, shape, out target);
        }

        private void ReadAdapter(string name, LoraName target, Dictionary<Role, string> roles)
        {
            string label = name.Length > 0 ? name : "(bare weight/bias)";
            float? alpha = roles.TryGetValue(Role.Alpha, out var alphaKey) ? ReadAlpha(alphaKey) : null;
            string? doraKey = roles.GetValueOrDefault(Role.DoraScale) ?? roles.GetValueOrDefault(Role.Magnitude);
            foreach (var unsupported in new[] { Role.Mid, Role.LokrT2, Role.HadaT1, Role.HadaT2 })
                if (roles.TryGetValue(unsupported, out var key))
                    throw Corrupt(key, "is a Tucker (convolution) factor; a linear layer's adapter has none — this is not a LoRA for a linear layer of " + _model.Name);

            // The change to the alias's rows [Rows, In] before the user's scale: one kind per adapter.
            HostTensor? dense = null;
            LowRankDelta? lowRank = null;
            string kind;
            int? rank = null;
            float scale = 1f;
            if (roles.ContainsKey(Role.Down) || roles.ContainsKey(Role.Up))
            {
                kind = "lora";
                var down = Matrix(roles, Role.Down, Role.Up, label, target.In, null);
                var up = Matrix(roles, Role.Up, Role.Down, label, null, null);
                if (up.Shape[0] != target.Rows)
                    throw Corrupt(roles[Role.Up], $"has {up.Shape[0]} rows; {string.Join(", ", target.Modules)} takes {target.Rows}");
                if (up.Shape[1] != down.Shape[0])
                    throw Corrupt(roles[Role.Up], $"{HostTensor.FormatShape(up.Shape)} and '{roles[Role.Down]}' {HostTensor.FormatShape(down.Shape)} disagree on the rank ({up.Shape[1]} vs {down.Shape[0]})");
                rank = down.Shape[0];
                alpha ??= _metadataAlpha.For(name);
                scale = (alpha ?? rank.Value) / rank.Value;
                lowRank = new LowRankDelta("", 0, down, up, scale);
            }
            else if (roles.Keys.Any(r => r is >= Role.LokrW1 and <= Role.LokrW2B))
            {
                kind = "lokr";
                var (w1, dim1) = Factor(roles, Role.LokrW1, Role.LokrW1A, Role.LokrW1B, label);
                var (w2, dim2) = Factor(roles, Role.LokrW2, Role.LokrW2A, Role.LokrW2B, label);
                // LyCORIS (and ComfyUI's lokr.py): alpha/dim with dim the rank of the factorised part (w2's when both are); whole factors: 1.
                rank = dim2 ?? dim1;
                scale = alpha is { } a && rank is { } d ? a / d : 1f;
                dense = Kronecker(w1, w2, target, roles.Values.First(k => k.Contains(".lokr_w", StringComparison.Ordinal)));
            }
            else if (roles.Keys.Any(r => r is >= Role.HadaW1A and <= Role.HadaW2B))
            {
                kind = "loha";
                var w1 = Product(Matrix(roles, Role.HadaW1A, Role.HadaW1B, label, null, null), Matrix(roles, Role.HadaW1B, Role.HadaW1A, label, target.In, null), roles[Role.HadaW1A]);
                var w2 = Product(Matrix(roles, Role.HadaW2A, Role.HadaW2B, label, null, null), Matrix(roles, Role.HadaW2B, Role.HadaW2A, label, target.In, null), roles[Role.HadaW2A]);
                if (w1.Shape[0] != target.Rows || w2.Shape[0] != target.Rows)
                    throw Corrupt(roles[Role.HadaW1A], $"gives {w1.Shape[0]} and {w2.Shape[0]} rows; {string.Join(", ", target.Modules)} takes {target.Rows}");
                rank = Shape(roles[Role.HadaW1B])[0];
                scale = alpha is { } a ? a / rank.Value : 1f;
                dense = new HostTensor(w1.Shape, w1.Data.Zip(w2.Data, (x, y) => x * y).ToArray());
            }
            else if (roles.TryGetValue(Role.Diff, out var diffKey))
            {
                kind = "diff";
                dense = Exact(diffKey, target.Rows, target.In);
            }
            else if (roles.TryGetValue(Role.SetWeight, out var setKey))
            {
                kind = "set_weight";
                dense = Subtract(Exact(setKey, target.Rows, target.In), BaseRows(target, ".weight", setKey), setKey);
            }
            else if (roles.TryGetValue(Role.WholeWeight, out var wholeKey))
            {
                kind = "full weight";
                dense = Subtract(Exact(wholeKey, target.Rows, target.In), BaseRows(target, ".weight", wholeKey), wholeKey);
            }
            else kind = roles.ContainsKey(Role.DiffBias) || roles.ContainsKey(Role.WholeBias) ? "diff" : "lora";

            if (doraKey != null)
            {
                kind = "dora+" + kind;
                dense = Dora(target, doraKey, dense ?? LowRankProduct(lowRank!), lowRank == null ? scale : 1f);
                lowRank = null;
                scale = 1f;
            }
            float userScale = options.Scale;
            if (lowRank != null)
                foreach (var piece in target.Pieces)
                    _content.LowRank.Add(new LowRankDelta(piece.Module, piece.RowOffset, lowRank.Down, Rows(lowRank.Up, piece.AliasRow, piece.Rows), scale * userScale));
            if (dense != null) AddDense(target, ".weight", dense, scale * userScale, label);
            // PEFT's lora_bias puts a lora_B bias on every adapter of a file; all-zero ones change nothing.
            if (roles.TryGetValue(Role.UpBias, out var upBias) && Exact(upBias, target.Rows, null) is var bias && bias.Data.Any(v => v != 0))
                AddDense(target, ".bias", bias, scale * userScale, upBias);
            if (roles.TryGetValue(Role.DiffBias, out var diffBias)) AddDense(target, ".bias", Exact(diffBias, target.Rows, null), userScale, diffBias);
            if (roles.TryGetValue(Role.WholeBias, out var wholeBias))
                AddDense(target, ".bias", Subtract(Exact(wholeBias, target.Rows, null), BaseRows(target, ".bias", wholeBias), wholeBias), userScale, wholeBias);
            if (lowRank == null && dense == null && !roles.ContainsKey(Role.UpBias) && !roles.ContainsKey(Role.DiffBias) && !roles.ContainsKey(Role.WholeBias))
                throw Corrupt(roles.Values.First(), "is an adapter part without its weights (alpha or DoRA scale alone)");
            _content.Adapters.Add(new AdapterSummary(label, target.Naming, kind, rank, alpha, scale, target.Modules.ToList()));
        }

        private void AddDense(LoraName target, string suffix, HostTensor rows, float scale, string key)
        {
            foreach (var piece in target.Pieces)
            {
                string parameter = piece.Module + suffix;
                if (!_model.Parameters.Any(p => p.Name == parameter))
                    throw Corrupt(key, $"changes '{parameter}', which {_model.Name} does not have");
                var slice = Rows(rows, piece.AliasRow, piece.Rows);
                for (int i = 0; i < slice.Data.Length; i++) slice.Data[i] *= scale;
                _content.Dense.Add(new DenseDelta(parameter, piece.RowOffset, slice));
            }
        }

        /// <summary>
        /// DoRA (weight-decomposed LoRA): W' = m · V / ‖V‖ with V = W + ΔW, the norm per output row when the magnitude
        /// has one value per row (PEFT's lora_magnitude_vector [out], LyCORIS wd_on_out [out, 1]) and per input column
        /// when it has one per column (kohya/LyCORIS dora_scale [1, in], ComfyUI's weight_decompose). The change is W' − W.
        /// </summary>
        private HostTensor Dora(LoraName target, string key, HostTensor delta, float deltaScale)
        {
            if (options.DescribeOnly && options.BaseWeights is null) return delta;
            var magnitude = file.ReadFloat32(key);
            var weight = BaseRows(target, ".weight", key);
            int rows = target.Rows, columns = target.In;
            bool perRow = magnitude.Rank == 1 ? magnitude.Shape[0] == rows
                : magnitude.Rank == 2 && magnitude.Shape[0] == rows && magnitude.Shape[1] == 1;
            bool perColumn = magnitude.Rank == 2 && magnitude.Shape[0] == 1 && magnitude.Shape[1] == columns;
            if (!perRow && !perColumn)
                throw Corrupt(key, $"is {HostTensor.FormatShape(magnitude.Shape)}; a DoRA magnitude for [{rows}, {columns}] is [{rows}], [{rows}, 1] or [1, {columns}]");
            RequireFinite(key, magnitude.Data);
            var combined = new double[rows * columns];
            for (int i = 0; i < combined.Length; i++) combined[i] = weight.Data[i] + (double)deltaScale * delta.Data[i];
            var norms = new double[perRow ? rows : columns];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                    norms[perRow ? r : c] += combined[r * columns + c] * combined[r * columns + c];
            var result = new HostTensor(rows, columns);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                {
                    int axis = perRow ? r : c;
                    double norm = Math.Sqrt(norms[axis]);
                    if (norm == 0) throw Corrupt(key, $"scales a {(perRow ? "row" : "column")} ({axis}) whose weight is all zero");
                    result.Data[r * columns + c] = (float)(magnitude.Data[axis] * combined[r * columns + c] / norm - weight.Data[r * columns + c]);
                }
            return result;
        }

        private HostTensor BaseRows(LoraName target, string suffix, string key)
        {
            if (options.DescribeOnly && options.BaseWeights is null) return new HostTensor(suffix == ".bias" ? [target.Rows] : [target.Rows, target.In]);
            var baseWeights = options.BaseWeights ?? throw new LoraMismatchException(
                $"{path}: '{key}' is relative to the base model's weights (DoRA or a whole weight); give the base checkpoint (--weights)");
            var rows = new HostTensor(suffix == ".bias" ? [target.Rows] : [target.Rows, target.In]);
            int width = suffix == ".bias" ? 1 : target.In;
            foreach (var piece in target.Pieces)
            {
                var weight = baseWeights(piece.Module + suffix);
                Array.Copy(weight.Data, piece.RowOffset * width, rows.Data, piece.AliasRow * width, piece.Rows * width);
            }
            return rows;
        }

        private HostTensor Subtract(HostTensor value, HostTensor baseRows, string key)
        {
            var result = new HostTensor((int[])value.Shape.Clone());
            for (int i = 0; i < result.Data.Length; i++) result.Data[i] = value.Data[i] - baseRows.Data[i];
            RequireFinite(key, result.Data);
            return result;
        }

        private (HostTensor Matrix, int? Rank) Factor(Dictionary<Role, string> roles, Role whole, Role a, Role b, string label)
        {
            if (roles.TryGetValue(whole, out var key)) return (Read2D(key), null);
            var left = Matrix(roles, a, b, label, null, null);
            var right = Matrix(roles, b, a, label, null, null);
            return (Product(left, right, roles[a]), right.Shape[0]);
        }

        private HostTensor Kronecker(HostTensor w1, HostTensor w2, LoraName target, string key)
        {
            int rows = w1.Shape[0] * w2.Shape[0], columns = w1.Shape[1] * w2.Shape[1];
            if (rows != target.Rows || columns != target.In)
                throw Corrupt(key, $"kron({HostTensor.FormatShape(w1.Shape)}, {HostTensor.FormatShape(w2.Shape)}) is [{rows}, {columns}]; {string.Join(", ", target.Modules)} is [{target.Rows}, {target.In}]");
            var result = new HostTensor(rows, columns);
            int r2 = w2.Shape[0], c2 = w2.Shape[1];
            for (int i = 0; i < w1.Shape[0]; i++)
                for (int j = 0; j < w1.Shape[1]; j++)
                {
                    float a = w1.Data[i * w1.Shape[1] + j];
                    for (int k = 0; k < r2; k++)
                        for (int l = 0; l < c2; l++)
                            result.Data[(i * r2 + k) * columns + j * c2 + l] = a * w2.Data[k * c2 + l];
                }
            return result;
        }

        private HostTensor Product(HostTensor left, HostTensor right, string key)
        {
            if (left.Shape[1] != right.Shape[0])
                throw Corrupt(key, $"{HostTensor.FormatShape(left.Shape)} cannot multiply its pair {HostTensor.FormatShape(right.Shape)} (ranks {left.Shape[1]} vs {right.Shape[0]})");
            return new HostTensor([left.Shape[0], right.Shape[1]], LowRankProduct(new LowRankDelta("", 0, right, left, 1f)).Data);
        }

        private static HostTensor LowRankProduct(LowRankDelta update) =>
            new([update.Rows, update.Down.Shape[1]], LoraContent.Product(update));

        /// <summary>A 2-D factor that must be there when its partner is; <paramref name="columns"/> checked when given.</summary>
        private HostTensor Matrix(Dictionary<Role, string> roles, Role role, Role partner, string label, int? columns, int? rows)
        {
            if (!roles.TryGetValue(role, out var key))
                throw Corrupt(roles.GetValueOrDefault(partner) ?? roles.Values.First(),
                    $"has no partner '{label}{Suffixes.First(s => s.Role == role).Suffix}': half an adapter cannot be applied");
            var matrix = Read2D(key);
            if (columns is { } c && matrix.Shape[1] != c) throw Corrupt(key, $"is {HostTensor.FormatShape(matrix.Shape)}; the layer takes {c} inputs");
            if (rows is { } r && matrix.Shape[0] != r) throw Corrupt(key, $"is {HostTensor.FormatShape(matrix.Shape)}; the layer has {r} outputs");
            return matrix;
        }

        private HostTensor Read2D(string key)
        {
            var shape = Shape(key);
            if (shape.Length != 2)
                throw Corrupt(key, $"is {shape.Length}-D {HostTensor.FormatShape(shape)}; a linear layer's factor is a 2-D matrix");
            var matrix = ReadFloat(key);
            RequireFinite(key, matrix.Data);
            return matrix;
        }

        /// <summary>A whole [rows, columns] weight or [rows] bias, checked against the layer.</summary>
        private HostTensor Exact(string key, int rows, int? columns)
        {
            var shape = Shape(key);
            bool fits = columns is { } c ? shape.SequenceEqual(new[] { rows, c }) : shape.SequenceEqual(new[] { rows });
            if (!fits) throw Corrupt(key, $"is {HostTensor.FormatShape(shape)}; the layer's {(columns is null ? "bias" : "weight")} is {HostTensor.FormatShape(columns is { } w ? [rows, w] : [rows])}");
            var value = ReadFloat(key);
            RequireFinite(key, value.Data);
            return value;
        }

        /// <summary>alpha as kohya and LyCORIS store it: any float or integer dtype, shape [] or [1].</summary>
        private float ReadAlpha(string key)
        {
            var shape = Shape(key);
            if (HostTensor.ElementCount(shape) != 1 || shape.Length > 1)
                throw Corrupt(key, $"is {HostTensor.FormatShape(shape)}; alpha is one number (shape [] or [1])");
            float alpha = file.TryGetTensor(key, out _) ? file.ReadFloat32(key).Data[0] : ReadIntegerScalar(key);
            if (!float.IsFinite(alpha)) throw Corrupt(key, $"is {alpha.ToString(CultureInfo.InvariantCulture)}; alpha must be a finite number");
            return alpha;
        }

        private float ReadIntegerScalar(string key)
        {
            var entry = file.OtherTensors.First(t => t.Name == key);
            if (entry.DTypeName != "I64") throw Corrupt(key, $"is {entry.DTypeName}; alpha is read from float or I64 tensors");
            return file.ReadInt64(key, out _)[0];
        }

        private HostTensor ReadFloat(string key) =>
            file.TryGetTensor(key, out _) ? file.ReadFloat32(key)
                : throw Corrupt(key, $"is {file.OtherTensors.First(t => t.Name == key).DTypeName}; adapter weights are float tensors");

        private int[] Shape(string key) =>
            file.TryGetTensor(key, out var entry) ? entry.Shape : file.OtherTensors.First(t => t.Name == key).Shape;

        private void RequireFinite(string key, float[] values)
        {
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0) throw Corrupt(key, $"holds {values[bad].ToString(CultureInfo.InvariantCulture)} at element {bad}");
        }

        private LoraMismatchException Corrupt(string key, string problem) => new($"{path}: '{key}' {problem}");
    }

    /// <summary>Rows [start, start + count) of a matrix or vector, copied.</summary>
    private static HostTensor Rows(HostTensor tensor, int start, int count)
    {
        int width = tensor.Rank == 1 ? 1 : tensor.Shape[1];
        if (start == 0 && count == tensor.Shape[0]) return tensor;
        var shape = (int[])tensor.Shape.Clone();
        shape[0] = count;
        return new HostTensor(shape, tensor.Data.AsSpan(start * width, count * width).ToArray());
    }

    /// <summary>
    /// alpha kept in the file's metadata, for PEFT files without alpha tensors: diffusers' "lora_adapter_metadata"
    /// (LoraConfig as JSON, keys optionally prefixed "transformer."): lora_alpha, or alpha_pattern's entry whose pattern
    /// ends the adapter's module name (PEFT's rule); or a bare "lora_alpha" entry as some trainers write.
    /// </summary>
    private sealed record MetadataAlpha(float? Alpha, IReadOnlyList<(Regex Pattern, float Alpha)> Patterns)
    {
        public static MetadataAlpha From(IReadOnlyDictionary<string, string> metadata)
        {
            float? alpha = metadata.TryGetValue("lora_alpha", out var text) &&
                           float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float bare) ? bare : null;
            var patterns = new List<(Regex, float)>();
            if (metadata.TryGetValue("lora_adapter_metadata", out var json))
            {
                try
                {
                    using var document = JsonDocument.Parse(json);
                    foreach (var property in document.RootElement.EnumerateObject())
                    {
                        string name = property.Name[(property.Name.LastIndexOf('.') + 1)..];
                        if (name == "lora_alpha" && property.Value.ValueKind == JsonValueKind.Number) alpha = property.Value.GetSingle();
                        if (name == "alpha_pattern" && property.Value.ValueKind == JsonValueKind.Object)
                            foreach (var entry in property.Value.EnumerateObject())
                                if (entry.Value.ValueKind == JsonValueKind.Number)
                                    patterns.Add((new Regex($"(^|\\.)({entry.Name})$"), entry.Value.GetSingle()));
                    }
                }
                catch (JsonException e)
                {
                    throw new LoraMismatchException($"the file's lora_adapter_metadata is not JSON ({e.Message}); remove it or fix it");
                }
            }
            return new MetadataAlpha(alpha, patterns);
        }

        public float? For(string adapterName)
        {
            foreach (var (pattern, alpha) in Patterns)
                if (pattern.IsMatch(adapterName)) return alpha;
            return Alpha;
        }
    }
}
