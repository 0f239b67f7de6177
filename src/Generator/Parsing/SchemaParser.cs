using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using InFluxEdit.Generator.Common;

namespace InFluxEdit.Generator.Parsing;

/// <summary>
/// Stage 1: schema JSON → specs. Checks the form of the files (known keys, right JSON kinds, no duplicate
/// names); what the names mean is checked by the graph stage.
/// </summary>
public static class SchemaParser
{
    /// <summary>Graph files live in a "graphs" folder; every other schema file is a model.</summary>
    public static bool IsGraphFile(string path)
    {
        string? folder = Path.GetFileName(Path.GetDirectoryName(path) ?? "");
        return string.Equals(folder, "graphs", StringComparison.OrdinalIgnoreCase);
    }

    public static ModelFileSpec ParseModel(string path, string text)
    {
        var diagnostics = new List<SchemaDiagnostic>();
        string fileName = Path.GetFileName(path);
        var empty = new SourceSpan(path, 0, 0, 0, 0, 0, 0);
        var root = ParseRoot(path, text, diagnostics);
        if (root == null)
            return new ModelFileSpec(path, fileName, "", "", empty, null, null, "F32", EquatableArray<ParamValueSpec>.Empty, diagnostics.ToEquatableArray());

        var reader = new ObjectReader(root, "the model file", diagnostics, Substitution.None);
        string className = reader.RequiredString("model") ?? "";
        if (className.Length > 0 && !IsIdentifier(className))
            diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"model\" must be a C# class name, got \"{className}\"", root.Get("model")!.Span));
        string graph = reader.RequiredString("graph") ?? "";
        var graphSpan = root.Get("graph")?.Span ?? root.Span;
        string? family = reader.OptionalString("family");
        string? description = reader.OptionalString("description");
        string dtype = (reader.OptionalString("dtype") ?? "f32").ToUpperInvariant();
        if (dtype != "F32" && dtype != "BF16" && dtype != "F16" && dtype != "F64")
        {
            diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"dtype\" must be f32, bf16, f16 or f64, got \"{dtype.ToLowerInvariant()}\"", root.Get("dtype")!.Span));
            dtype = "F32";
        }
        var parameters = new List<ParamValueSpec>();
        var paramsNode = reader.Required("params", JsonKind.Object);
        if (paramsNode != null)
        {
            var seen = new HashSet<string>();
            foreach (var member in paramsNode.Members)
            {
                if (!seen.Add(member.Key.Value))
                    diagnostics.Add(Error(DiagnosticIds.DuplicateName, $"param '{member.Key.Value}' is given twice", member.Key.Span));
                var value = ReadAttribute(member.Value, diagnostics, Substitution.None, $"param '{member.Key.Value}'");
                if (value != null) parameters.Add(new ParamValueSpec(member.Key.Value, value));
            }
        }
        reader.RejectUnknown("$schema", "model", "graph", "family", "description", "dtype", "params");
        return new ModelFileSpec(path, fileName, className, graph, graphSpan, family, description, dtype,
            parameters.ToEquatableArray(), diagnostics.ToEquatableArray()) { ClassNameSpan = root.Get("model")?.Span ?? root.Span };
    }

    public static GraphSpec ParseGraph(string path, string text)
    {
        var diagnostics = new List<SchemaDiagnostic>();
        var root = ParseRoot(path, text, diagnostics);
        if (root == null)
            return new GraphSpec(path, Path.GetFileNameWithoutExtension(path), null, default, default, default, default,
                default, default, diagnostics.ToEquatableArray());

        var reader = new ObjectReader(root, "the graph file", diagnostics, Substitution.None);
        string name = reader.RequiredString("graph") ?? Path.GetFileNameWithoutExtension(path);
        string? description = reader.OptionalString("description");

        var parameters = new List<ParamDeclarationSpec>();
        foreach (var member in Members(reader.Required("params", JsonKind.Object), "param", diagnostics))
        {
            ParamType? type = member.Value.Kind == JsonKind.String ? member.Value.Text switch
            {
                "int" => ParamType.Int,
                "number" => ParamType.Number,
                "bool" => ParamType.Bool,
                "int[]" => ParamType.IntList,
                "string" => ParamType.String,
                _ => null,
            } : null;
            if (type == null)
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                    $"param '{member.Key.Value}' must declare its type as \"int\", \"number\", \"bool\", \"int[]\" or \"string\"", member.Value.Span));
            else parameters.Add(new ParamDeclarationSpec(member.Key.Value, type.Value, member.Key.Span));
        }

        var lets = new List<LetSpec>();
        foreach (var member in Members(reader.Optional("let", JsonKind.Object), "let", diagnostics))
        {
            if (member.Value.Kind != JsonKind.String)
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"let '{member.Key.Value}' must be an expression string", member.Value.Span));
            else lets.Add(new LetSpec(member.Key.Value, member.Value.Text!, member.Value.Span));
        }

        var requirements = new List<RequirementSpec>();
        var requireNode = reader.Optional("require", JsonKind.Array);
        if (requireNode != null)
            foreach (var item in requireNode.Items)
            {
                var r = new ObjectReader(item, "a requirement", diagnostics, Substitution.None);
                if (!r.IsObject) continue;
                string? that = r.RequiredString("that");
                string? message = r.RequiredString("message");
                r.RejectUnknown("that", "message");
                if (that != null && message != null) requirements.Add(new RequirementSpec(that, message, item.Get("that")!.Span));
            }

        var sizes = new List<SizeSpec>();
        foreach (var member in Members(reader.Required("sizes", JsonKind.Object), "size", diagnostics))
            sizes.Add(new SizeSpec(member.Key.Value, member.Value.Text ?? "", member.Key.Span));

        var weights = ReadTensorDeclarations(reader.Optional("weights", JsonKind.Object), "weight", diagnostics, Substitution.None);
        var templates = new Dictionary<string, JsonNode>();
        foreach (var member in Members(reader.Optional("templates", JsonKind.Object), "template", diagnostics))
            templates[member.Key.Value] = member.Value;
        var substitution = Substitution.None.WithTemplates(templates);
        var entries = new List<EntrySpec>();
        var entriesNode = reader.Optional("entries", JsonKind.Object);
        if (entriesNode != null)
        {
            foreach (var member in Members(entriesNode, "entry", diagnostics))
            {
                if (!IsIdentifier(member.Key.Value))
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"entry name '{member.Key.Value}' must be an identifier", member.Key.Span));
                var entry = ReadEntry(new ObjectReader(member.Value, $"entry '{member.Key.Value}'", diagnostics, substitution),
                    member.Key.Value, member.Key.Span, diagnostics, substitution);
                if (entry != null) entries.Add(entry);
            }
            foreach (var key in new[] { "inputs", "body", "outputs", "input_gradients" })
                if (root.Get(key) != null)
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"{key}\" belongs inside each entry when a graph has \"entries\"", root.Get(key)!.Span));
        }
        else
        {
            var entry = ReadEntry(reader, "forward", root.Span, diagnostics, substitution);
            if (entry != null) entries.Add(entry);
        }

        var loraAliases = ReadLoraFormats(reader.Optional("lora_formats", JsonKind.Object), diagnostics);
        var trainable = new List<string>();
        var trainableNode = reader.Optional("trainable", JsonKind.Array);
        if (trainableNode != null)
            foreach (var item in trainableNode.Items)
            {
                if (item.Kind == JsonKind.String) trainable.Add(item.Text!);
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"trainable\" lists module patterns such as \"double_blocks.{i}.*\"", item.Span));
            }

        var lora = ReadLora(reader.Optional("lora", JsonKind.Object), diagnostics);
        var ignored = new List<string>();
        var ignoredNode = reader.Optional("ignored_tensors", JsonKind.Array);
        if (ignoredNode != null)
            foreach (var item in ignoredNode.Items)
            {
                if (item.Kind == JsonKind.String && item.Text!.Length > 0) ignored.Add(item.Text!);
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"ignored_tensors\" lists checkpoint key patterns such as \"vision_model.*\"", item.Span));
            }

        var unquantized = new List<NameRef>();
        var unquantizedNode = reader.Optional("unquantized", JsonKind.Array);
        if (unquantizedNode != null)
            foreach (var item in unquantizedNode.Items)
            {
                if (item.Kind == JsonKind.String && item.Text!.Length > 0) unquantized.Add(new NameRef(item.Text!, item.Span));
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"unquantized\" lists module patterns such as \"final_layer.*\"", item.Span));
            }

        var keyRenames = new List<KeyRenameSpec>();
        var renamesNode = reader.Optional("key_renames", JsonKind.Object);
        if (renamesNode != null)
            foreach (var member in renamesNode.Members.Where(m => m.Key.Value != "comment"))
            {
                if (member.Key.Value.Length > 0 && member.Value.Kind == JsonKind.String && member.Value.Text!.Length > 0)
                    keyRenames.Add(new KeyRenameSpec(member.Key.Value, member.Value.Text!, member.Key.Span));
                else
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                        "\"key_renames\" maps text in another tool's checkpoint keys to the schema's, such as \"enc.blk.\": \"encoder.block.\"", member.Key.Span));
            }

        bool float32Activations = reader.OptionalBool("float32_activations");

        reader.RejectUnknown("$schema", "graph", "description", "params", "let", "require", "sizes", "inputs", "weights", "templates",
            "body", "outputs", "input_gradients", "entries", "lora_formats", "trainable", "lora", "ignored_tensors", "unquantized", "key_renames",
            "float32_activations");
        return new GraphSpec(path, name, description, parameters.ToEquatableArray(), lets.ToEquatableArray(),
            requirements.ToEquatableArray(), sizes.ToEquatableArray(), weights, entries.ToEquatableArray(),
            diagnostics.ToEquatableArray())
        {
            LoraAliases = loraAliases,
            Trainable = trainable.ToEquatableArray(),
            Lora = lora,
            IgnoredTensors = ignored.ToEquatableArray(),
            Unquantized = unquantized.ToEquatableArray(),
            KeyRenames = keyRenames.ToEquatableArray(),
            Float32Activations = float32Activations,
        };
    }

    /// <summary>The "lora" section; its patterns and splits are checked against the weights when the graph is bound.</summary>
    private static LoraSpec? ReadLora(JsonNode? node, List<SchemaDiagnostic> diagnostics)
    {
        if (node == null) return null;
        var r = new ObjectReader(node, "the \"lora\" section", diagnostics, Substitution.None);
        string defaultPreset = r.RequiredString("default_preset") ?? "";
        int rank = 16;
        var rankNode = r.Optional("rank", JsonKind.Number);
        if (rankNode != null && (!int.TryParse(rankNode.Text, NumberStyles.None, CultureInfo.InvariantCulture, out rank) || rank < 1))
            diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"rank\" must be a whole number of at least 1, not {rankNode.Text}", rankNode.Span));
        double? alpha = null;
        var alphaNode = r.Optional("alpha", JsonKind.Number);
        if (alphaNode != null)
        {
            if (double.TryParse(alphaNode.Text, NumberStyles.Float, CultureInfo.InvariantCulture, out double a) && a > 0) alpha = a;
            else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"alpha\" must be positive, not {alphaNode.Text}", alphaNode.Span));
        }
        var presets = new List<LoraPresetSpec>();
        foreach (var member in Members(r.Required("presets", JsonKind.Object), "LoRA preset", diagnostics))
        {
            var p = new ObjectReader(member.Value, $"LoRA preset '{member.Key.Value}'", diagnostics, Substitution.None);
            string? description = p.OptionalString("description");
            string init = p.OptionalString("init") ?? "gaussian";
            if (init != "gaussian" && init != "kaiming_uniform")
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"init\" must be gaussian or kaiming_uniform, not \"{init}\"", p.Optional("init", JsonKind.String)!.Span));
            string? split = p.OptionalString("split");
            var targets = new List<LoraTargetSpec>();
            var targetsNode = p.Required("targets", JsonKind.Array);
            p.RejectUnknown("description", "init", "split", "targets", "comment");
            if (targetsNode == null) continue;
            foreach (var item in targetsNode.Items)
            {
                if (item.Kind == JsonKind.String)
                {
                    targets.Add(new LoraTargetSpec(item.Text!, EquatableArray<string>.Empty, item.Span));
                    continue;
                }
                var t = new ObjectReader(item, "a LoRA target", diagnostics, Substitution.None);
                string? module = t.RequiredString("module");
                var slices = new List<string>();
                var slicesNode = t.Optional("slices", JsonKind.Array);
                if (slicesNode != null)
                    foreach (var slice in slicesNode.Items)
                    {
                        if (slice.Kind == JsonKind.String) slices.Add(slice.Text!);
                        else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"slices\" lists names of the format's row blocks, such as \"attn.to_q\"", slice.Span));
                    }
                t.RejectUnknown("module", "slices", "comment");
                if (module != null) targets.Add(new LoraTargetSpec(module, slices.ToEquatableArray(), item.Span));
            }
            presets.Add(new LoraPresetSpec(member.Key.Value, description, init, split, targets.ToEquatableArray(), member.Key.Span));
        }
        r.RejectUnknown("default_preset", "rank", "alpha", "presets", "comment");
        if (defaultPreset.Length > 0 && presets.Count > 0 && presets.All(p => p.Name != defaultPreset))
            diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                $"\"default_preset\" is \"{defaultPreset}\", which is not one of the presets ({string.Join(", ", presets.Select(p => p.Name))})",
                node.Get("default_preset")!.Span));
        return new LoraSpec(defaultPreset, rank, alpha, presets.ToEquatableArray(), node.Span);
    }

    private static EquatableArray<LoraAliasSpec> ReadLoraFormats(JsonNode? node, List<SchemaDiagnostic> diagnostics)
    {
        var aliases = new List<LoraAliasSpec>();
        foreach (var format in Members(node, "LoRA format", diagnostics))
        {
            var r = new ObjectReader(format.Value, $"LoRA format '{format.Key.Value}'", diagnostics, Substitution.None);
            string prefix = r.OptionalString("prefix") ?? "";
            var modules = r.Required("modules", JsonKind.Object);
            r.RejectUnknown("prefix", "modules", "comment");
            foreach (var module in Members(modules, "module", diagnostics))
            {
                if (module.Value.Kind == JsonKind.String)
                {
                    aliases.Add(new LoraAliasSpec(format.Key.Value, prefix + module.Value.Text, module.Key.Value, 0, "", module.Value.Span));
                    continue;
                }
                var m = new ObjectReader(module.Value, $"module '{module.Key.Value}'", diagnostics, Substitution.None);
                var split = m.Required("split", JsonKind.Array);
                var rows = m.Required("rows", JsonKind.Array);
                var aliasRows = m.Optional("alias_rows", JsonKind.Array);
                m.RejectUnknown("split", "rows", "alias_rows", "comment");
                if (split == null || rows == null) continue;
                bool IsSize(JsonNode item) => item.Kind is JsonKind.String or JsonKind.Number;
                if (split.Items.Count != rows.Items.Count || split.Items.Any(i => i.Kind != JsonKind.String) || !rows.Items.All(IsSize) ||
                    (aliasRows != null && (aliasRows.Items.Count != split.Items.Count || !aliasRows.Items.All(IsSize))))
                {
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"module '{module.Key.Value}': \"split\" names, \"rows\" sizes (and \"alias_rows\" starts) must pair up", module.Value.Span));
                    continue;
                }
                for (int part = 0; part < split.Items.Count; part++)
                    aliases.Add(new LoraAliasSpec(format.Key.Value, split.Items[part].Text!.Length == 0 ? "" : prefix + split.Items[part].Text, module.Key.Value, part,
                        rows.Items[part].Text!, split.Items[part].Span, aliasRows?.Items[part].Text ?? ""));
            }
        }
        return aliases.ToEquatableArray();
    }

    private static EntrySpec? ReadEntry(ObjectReader reader, string name, SourceSpan span, List<SchemaDiagnostic> diagnostics,
        Substitution substitution)
    {
        if (!reader.IsObject) return null;
        var inputs = ReadTensorDeclarations(reader.Required("inputs", JsonKind.Object), "input", diagnostics, substitution);
        var body = ReadBody(reader.Required("body", JsonKind.Array), diagnostics, substitution);
        var outputs = new List<NameRef>();
        var outputsNode = reader.Required("outputs", JsonKind.Array);
        if (outputsNode != null)
            foreach (var item in outputsNode.Items)
            {
                if (item.Kind == JsonKind.String) outputs.Add(new NameRef(item.Text!, item.Span));
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "outputs must be value names", item.Span));
            }
        var inputGradients = new List<NameRef>();
        var gradientsNode = reader.Optional("input_gradients", JsonKind.Array);
        if (gradientsNode != null)
            foreach (var item in gradientsNode.Items)
            {
                if (item.Kind == JsonKind.String) inputGradients.Add(new NameRef(item.Text!, item.Span));
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"input_gradients\" lists input names", item.Span));
            }
        if (name != "forward") reader.RejectUnknown("inputs", "body", "outputs", "input_gradients", "comment");
        return new EntrySpec(name, inputs, body, outputs.ToEquatableArray(), span) { InputGradients = inputGradients.ToEquatableArray() };
    }

    private static JsonNode? ParseRoot(string path, string text, List<SchemaDiagnostic> diagnostics)
    {
        try
        {
            var root = JsonReader.Parse(path, text);
            if (root.Kind == JsonKind.Object) return root;
            diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "a schema file must hold one JSON object", root.Span));
        }
        catch (JsonParseException e)
        {
            diagnostics.Add(Error(DiagnosticIds.InvalidJson, "invalid JSON: " + e.Message, e.Span));
        }
        return null;
    }

    private static IEnumerable<KeyValuePair<JsonString, JsonNode>> Members(JsonNode? node, string what, List<SchemaDiagnostic> diagnostics)
    {
        if (node == null) yield break;
        var seen = new HashSet<string>();
        foreach (var member in node.Members)
        {
            if (!seen.Add(member.Key.Value))
            {
                diagnostics.Add(Error(DiagnosticIds.DuplicateName, $"{what} '{member.Key.Value}' is declared twice", member.Key.Span));
                continue;
            }
            yield return member;
        }
    }

    private static EquatableArray<TensorDeclarationSpec> ReadTensorDeclarations(
        JsonNode? node, string what, List<SchemaDiagnostic> diagnostics, Substitution substitution)
    {
        var result = new List<TensorDeclarationSpec>();
        foreach (var member in Members(node, what, diagnostics))
        {
            string name = substitution.Apply(member.Key.Value);
            JsonNode? shapeNode = member.Value;
            string? condition = null;
            if (member.Value.Kind == JsonKind.Object)
            {
                var r = new ObjectReader(member.Value, $"{what} '{name}'", diagnostics, substitution);
                shapeNode = r.Required("shape", JsonKind.Array);
                condition = r.OptionalString("if");
                r.RejectUnknown("shape", "if");
            }
            if (shapeNode == null) continue;
            if (shapeNode.Kind != JsonKind.Array)
            {
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                    $"{what} '{name}' must be a shape (an array of sizes) or {{\"shape\": [...], \"if\": \"...\"}}", shapeNode.Span));
                continue;
            }
            var dims = new List<AttributeValue>();
            foreach (var item in shapeNode.Items)
            {
                var dim = ReadAttribute(item, diagnostics, substitution, $"a dimension of {what} '{name}'");
                if (dim == null) continue;
                if (dim.Kind != AttributeKind.Number && dim.Kind != AttributeKind.String)
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"a dimension of {what} '{name}' must be a number or an expression", item.Span));
                else dims.Add(dim);
            }
            result.Add(new TensorDeclarationSpec(name, dims.ToEquatableArray(), condition, member.Key.Span));
        }
        return result.ToEquatableArray();
    }

    private static EquatableArray<StatementSpec> ReadBody(JsonNode? node, List<SchemaDiagnostic> diagnostics, Substitution substitution)
    {
        var statements = new List<StatementSpec>();
        if (node == null) return EquatableArray<StatementSpec>.Empty;
        foreach (var item in node.Items) ReadStatement(item, diagnostics, substitution, statements);
        return statements.ToEquatableArray();
    }

    private static void ReadStatement(JsonNode node, List<SchemaDiagnostic> diagnostics, Substitution substitution, List<StatementSpec> into)
    {
        var r = new ObjectReader(node, "a statement", diagnostics, substitution);
        if (!r.IsObject) return;
        // A statement of only a comment documents the schema for its readers.
        if (node.Members.Count == 1 && node.Get("comment")?.Kind == JsonKind.String) return;

        if (node.Get("each") != null)
        {
            // A template over names ("img", "txt"): the body is repeated with {each} replaced, at parse time.
            string? variable = r.RequiredString("each");
            var values = r.Required("in", JsonKind.Array);
            var body = r.Required("body", JsonKind.Array);
            r.RejectUnknown("each", "in", "body", "comment");
            if (variable == null || values == null || body == null) return;
            foreach (var value in values.Items)
            {
                if (value.Kind != JsonKind.String)
                {
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"in\" of an each-block must list strings", value.Span));
                    continue;
                }
                var inner = substitution.With(variable, substitution.Apply(value.Text!));
                foreach (var statement in body.Items) ReadStatement(statement, diagnostics, inner, into);
            }
            return;
        }

        if (node.Get("use") != null)
        {
            // A template instance: its weights under the given key prefix, its body with the given lets,
            // bound like a one-iteration unrolled block.
            string? name = r.RequiredString("use");
            string prefix = r.OptionalString("prefix") ?? "";
            var letsNode = r.Optional("let", JsonKind.Object);
            r.RejectUnknown("use", "prefix", "let", "comment");
            if (name == null) return;
            if (!substitution.Templates.TryGetValue(name, out var template))
            {
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                    $"unknown template '{name}' (known: {string.Join(", ", substitution.Templates.Keys)})", node.Get("use")!.Span));
                return;
            }
            var t = new ObjectReader(template, $"template '{name}'", diagnostics, substitution);
            var templateWeights = ReadTensorDeclarations(t.Optional("weights", JsonKind.Object), "weight", diagnostics, substitution);
            var templateBody = ReadBody(t.Required("body", JsonKind.Array), diagnostics, substitution);
            t.RejectUnknown("weights", "body", "comment");
            var useLets = new List<LetSpec>();
            foreach (var member in Members(letsNode, "let", diagnostics))
            {
                if (member.Value.Kind != JsonKind.String)
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"let '{member.Key.Value}' must be an expression string", member.Value.Span));
                else useLets.Add(new LetSpec(member.Key.Value, substitution.Apply(member.Value.Text!), member.Value.Span));
            }
            into.Add(new StatementSpec(StatementKind.Repeat, "use " + name, default, default, "1", "use", prefix, null,
                templateWeights, templateBody, node.Span)
            {
                Unroll = true,
                Lets = useLets.ToEquatableArray(),
                IsTemplateUse = true,
            });
            return;
        }

        if (node.Get("repeat") != null)
        {
            string? count = r.RequiredString("repeat");
            string? index = r.RequiredString("index");
            string? prefix = r.RequiredString("prefix");
            bool unroll = r.OptionalBool("unroll");
            bool reverse = r.OptionalBool("reverse");
            var lets = new List<LetSpec>();
            foreach (var member in Members(r.Optional("let", JsonKind.Object), "let", diagnostics))
            {
                if (member.Value.Kind != JsonKind.String)
                    diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"let '{member.Key.Value}' must be an expression string", member.Value.Span));
                else lets.Add(new LetSpec(member.Key.Value, substitution.Apply(member.Value.Text!), member.Value.Span));
            }
            if (lets.Count > 0 && !unroll)
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "a repeat's \"let\" needs \"unroll\": true (its values change per iteration)", node.Span));
            if (reverse && !unroll)
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"reverse\" needs \"unroll\": true", node.Span));
            var weights = ReadTensorDeclarations(r.Optional("weights", JsonKind.Object), "weight", diagnostics, substitution);
            var body = ReadBody(r.Required("body", JsonKind.Array), diagnostics, substitution);
            r.RejectUnknown("repeat", "index", "prefix", "unroll", "reverse", "let", "weights", "body", "comment");
            into.Add(new StatementSpec(StatementKind.Repeat, "repeat", default, default, count, index, prefix, null, weights, body, node.Span)
            {
                Unroll = unroll,
                Reverse = reverse,
                Lets = lets.ToEquatableArray(),
            });
            return;
        }

        if (node.Get("if") != null && node.Get("op") == null)
        {
            string? condition = r.RequiredString("if");
            var body = ReadBody(r.Required("body", JsonKind.Array), diagnostics, substitution);
            r.RejectUnknown("if", "body", "comment");
            into.Add(new StatementSpec(StatementKind.If, "if", default, default, null, null, null, condition, default, body, node.Span));
            return;
        }

        string? op = r.RequiredString("op");
        if (op == null) return;
        var outputs = new List<NameRef>();
        var arguments = new List<ArgumentSpec>();
        foreach (var member in node.Members)
        {
            string key = member.Key.Value;
            if (key == "op" || key == "comment") continue;
            if (key == "out")
            {
                if (member.Value.Kind == JsonKind.String) outputs.Add(new NameRef(substitution.Apply(member.Value.Text!), member.Value.Span));
                else if (member.Value.Kind == JsonKind.Array)
                    foreach (var item in member.Value.Items)
                    {
                        if (item.Kind == JsonKind.String) outputs.Add(new NameRef(substitution.Apply(item.Text!), item.Span));
                        else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"out\" must name values", item.Span));
                    }
                else diagnostics.Add(Error(DiagnosticIds.InvalidSchema, "\"out\" must be a name or a list of names", member.Value.Span));
                continue;
            }
            if (arguments.Any(a => a.Name == key))
            {
                diagnostics.Add(Error(DiagnosticIds.DuplicateName, $"argument '{key}' is given twice", member.Key.Span));
                continue;
            }
            var value = ReadAttribute(member.Value, diagnostics, substitution, $"argument '{key}'");
            if (value != null) arguments.Add(new ArgumentSpec(key, value));
        }
        into.Add(new StatementSpec(StatementKind.Op, op, arguments.ToEquatableArray(), outputs.ToEquatableArray(),
            null, null, null, null, default, default, node.Span));
    }

    private static AttributeValue? ReadAttribute(JsonNode node, List<SchemaDiagnostic> diagnostics, Substitution substitution, string what)
    {
        switch (node.Kind)
        {
            case JsonKind.String: return new AttributeValue(AttributeKind.String, substitution.Apply(node.Text!), default, node.Span);
            case JsonKind.Number: return new AttributeValue(AttributeKind.Number, node.Text!, default, node.Span);
            case JsonKind.True: return new AttributeValue(AttributeKind.Bool, "true", default, node.Span);
            case JsonKind.False: return new AttributeValue(AttributeKind.Bool, "false", default, node.Span);
            case JsonKind.Array:
                var items = new List<AttributeValue>();
                foreach (var item in node.Items)
                {
                    if (item.Kind == JsonKind.Array || item.Kind == JsonKind.Object)
                    {
                        diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"{what} may list only numbers, strings and booleans", item.Span));
                        return null;
                    }
                    var value = ReadAttribute(item, diagnostics, substitution, what);
                    if (value != null) items.Add(value);
                }
                return new AttributeValue(AttributeKind.List, "", items.ToEquatableArray(), node.Span);
            default:
                diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"{what} cannot be {node.Describe()}", node.Span));
                return null;
        }
    }

    internal static bool IsIdentifier(string name) =>
        name.Length > 0 && (char.IsLetter(name[0]) || name[0] == '_') && name.All(c => char.IsLetterOrDigit(c) || c == '_');

    internal static SchemaDiagnostic Error(string id, string message, SourceSpan span) => new(id, message, span);

    /// <summary>Replacements of "{name}" inside strings (each-blocks), and the graph's templates.</summary>
    private sealed class Substitution
    {
        public static readonly Substitution None = new(new Dictionary<string, string>(), new Dictionary<string, JsonNode>());
        private readonly Dictionary<string, string> _values;

        private Substitution(Dictionary<string, string> values, IReadOnlyDictionary<string, JsonNode> templates)
        {
            _values = values;
            Templates = templates;
        }

        public IReadOnlyDictionary<string, JsonNode> Templates { get; }

        public Substitution With(string name, string value) =>
            new(new Dictionary<string, string>(_values) { [name] = value }, Templates);

        public Substitution WithTemplates(IReadOnlyDictionary<string, JsonNode> templates) => new(_values, templates);

        public string Apply(string text)
        {
            foreach (var pair in _values) text = text.Replace("{" + pair.Key + "}", pair.Value);
            return text;
        }
    }

    /// <summary>Reads members of one JSON object, reporting wrong kinds and unknown keys at their lines.</summary>
    private sealed class ObjectReader
    {
        private readonly JsonNode _node;
        private readonly string _what;
        private readonly List<SchemaDiagnostic> _diagnostics;
        private readonly Substitution _substitution;

        public ObjectReader(JsonNode node, string what, List<SchemaDiagnostic> diagnostics, Substitution substitution)
        {
            _node = node;
            _what = what;
            _diagnostics = diagnostics;
            _substitution = substitution;
            IsObject = node.Kind == JsonKind.Object;
            if (!IsObject) diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"{what} must be an object, not {node.Describe()}", node.Span));
        }

        public bool IsObject { get; }

        public JsonNode? Optional(string key, JsonKind kind)
        {
            if (!IsObject) return null;
            var value = _node.Get(key);
            if (value == null) return null;
            if (value.Kind == kind) return value;
            _diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"{key}\" in {_what} must be {KindName(kind)}, not {value.Describe()}", value.Span));
            return null;
        }

        public JsonNode? Required(string key, JsonKind kind)
        {
            if (!IsObject) return null;
            if (_node.Get(key) == null)
            {
                _diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"{_what} needs \"{key}\"", _node.Span));
                return null;
            }
            return Optional(key, kind);
        }

        public string? OptionalString(string key)
        {
            var node = Optional(key, JsonKind.String);
            return node == null ? null : _substitution.Apply(node.Text!);
        }

        public bool OptionalBool(string key)
        {
            if (!IsObject) return false;
            var value = _node.Get(key);
            if (value == null) return false;
            if (value.Kind == JsonKind.True) return true;
            if (value.Kind == JsonKind.False) return false;
            _diagnostics.Add(Error(DiagnosticIds.InvalidSchema, $"\"{key}\" in {_what} must be true or false", value.Span));
            return false;
        }

        public string? RequiredString(string key)
        {
            var node = Required(key, JsonKind.String);
            return node == null ? null : _substitution.Apply(node.Text!);
        }

        public void RejectUnknown(params string[] known)
        {
            if (!IsObject) return;
            foreach (var member in _node.Members)
                if (Array.IndexOf(known, member.Key.Value) < 0)
                    _diagnostics.Add(Error(DiagnosticIds.InvalidSchema,
                        $"unknown key \"{member.Key.Value}\" in {_what} (known: {string.Join(", ", known.Where(k => k != "$schema"))})",
                        member.Key.Span));
        }

        private static string KindName(JsonKind kind) => kind switch
        {
            JsonKind.Object => "an object",
            JsonKind.Array => "an array",
            JsonKind.String => "a string",
            _ => kind.ToString().ToLowerInvariant(),
        };
    }
}
