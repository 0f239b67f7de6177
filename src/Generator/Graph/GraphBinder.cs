using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Parsing;

namespace InFluxEdit.Generator.Graph;

/// <summary>
/// Stage 2: a model's params applied to its graph. Folds params and lets to constants, checks the
/// requirements, resolves every value and weight name, and infers and checks every shape.
/// </summary>
public sealed class GraphBinder
{
    private readonly ModelFileSpec _model;
    private readonly GraphSpec _graph;
    private readonly List<SchemaDiagnostic> _diagnostics = new();
    private readonly Dictionary<string, SchemaValue> _constants = new();
    private readonly HashSet<string> _sizes = new();
    private readonly List<BoundWeight> _allWeights = new();
    private int _nextValueId;

    private readonly bool _unrollLoops;

    private GraphBinder(ModelFileSpec model, GraphSpec graph, bool unrollLoops)
    {
        _model = model;
        _graph = graph;
        _unrollLoops = unrollLoops;
    }

    /// <summary>
    /// Binds a model. With <paramref name="unrollLoops"/> every repeat is bound per iteration (the training pass:
    /// each block's activations are distinct values that the backward pass reads).
    /// </summary>
    public static (BoundModel? Model, IReadOnlyList<SchemaDiagnostic> Diagnostics) Bind(ModelFileSpec model, GraphSpec graph, bool unrollLoops = false)
    {
        var binder = new GraphBinder(model, graph, unrollLoops);
        var bound = binder.Run();
        return (binder._diagnostics.Count == 0 ? bound : null, binder._diagnostics);
    }

    private BoundModel? Run()
    {
        BindParams();
        if (_diagnostics.Count > 0) return null;
        BindLets();
        if (_diagnostics.Count > 0) return null;
        CheckRequirements();
        if (_diagnostics.Count > 0) return null;

        foreach (var size in _graph.Sizes)
        {
            if (_constants.ContainsKey(size.Name))
                Error(DiagnosticIds.DuplicateName, $"size '{size.Name}' has the name of a param or let", size.Span);
            _sizes.Add(size.Name);
        }

        var root = new Scope(this, null, null);
        DeclareWeights(_graph.Weights, root, null, "");

        var entries = new List<BoundEntry>();
        foreach (var entry in _graph.Entries)
        {
            var scope = new Scope(this, root, null);
            var inputs = new List<BoundValue>();
            foreach (var input in entry.Inputs)
            {
                var shape = EvaluateShape(input.Shape, $"input '{input.Name}'", scope, allowSizes: true);
                if (shape == null) continue;
                try
                {
                    inputs.Add(scope.NewValue(input.Name, shape, null));
                }
                catch (ExpressionException e)
                {
                    Error(DiagnosticIds.DuplicateName, e.Message, input.Span);
                }
            }
            var sizes = _graph.Sizes.Select(s => s.Name)
                .Where(size => inputs.Any(i => i.Shape.Any(d => d.Terms.ContainsKey(size)))).ToList();

            var body = new BoundScope();
            BindStatements(entry.Body, scope, body);

            var outputs = new List<BoundValue>();
            foreach (var output in entry.Outputs)
            {
                var value = scope.LookupValue(output.Name);
                if (value?.IsError == true) continue;
                if (value == null) Error(DiagnosticIds.UnknownValue, $"output '{output.Name}' is never computed{scope.Suggest(output.Name)}", output.Span);
                else outputs.Add(value);
            }
            var inputGradients = new List<BoundValue>();
            foreach (var name in entry.InputGradients)
            {
                var input = inputs.FirstOrDefault(i => i.Name == name.Name);
                if (input == null) Error(DiagnosticIds.UnknownValue, $"input_gradients: '{name.Name}' is not an input of entry '{entry.Name}'", name.Span);
                else inputGradients.Add(input);
            }
            entries.Add(new BoundEntry(entry.Name, sizes, inputs, body, outputs) { InputGradients = inputGradients });
        }

        // With other errors, ops that failed to bind leave weights unused: report only the cause.
        if (_diagnostics.Count == 0)
            foreach (var weight in _allWeights.Where(w => !w.IsUsed))
                Error(DiagnosticIds.UnusedWeight, $"weight '{weight.Key}' is declared but no op uses it: a checkpoint would need it for nothing",
                    weight.Span);

        var model = new BoundModel(_model, _graph, _allWeights, entries);
        MarkUnquantized(model);
        CheckKeyRenames(model);
        if (!_unrollLoops) BindLoraAliases(model, root);
        if (!_unrollLoops && _graph.Lora != null) model.Lora = BindLoraPresets(model, _graph.Lora);
        return model;
    }

    /// <summary>
    /// The renames run on every key of a file, the schema's own names included: text that occurs in one of them would
    /// rename a checkpoint that already fits, so it is an error.
    /// </summary>
    private void CheckKeyRenames(BoundModel model)
    {
        foreach (var rename in _graph.KeyRenames)
            if (model.Weights.FirstOrDefault(w => w.Key.Contains(rename.From)) is { } clash)
                Error(DiagnosticIds.InvalidSchema,
                    $"\"key_renames\": '{rename.From}' occurs in the graph's own key '{clash.Key}', so it would rename checkpoints that already fit", rename.Span);
    }

    /// <summary>Flags the weight matrices the graph's "unquantized" patterns name; a pattern that names none is an error.</summary>
    private void MarkUnquantized(BoundModel model)
    {
        foreach (var pattern in _graph.Unquantized)
        {
            var matrices = model.Weights.Where(w => w.Shape.Count == 2 && MatchesModule(pattern.Name, w.Module)).ToList();
            if (matrices.Count == 0)
                Error(DiagnosticIds.UnknownWeight, $"\"unquantized\": '{pattern.Name}' names no weight matrix of the graph (a module key pattern, \"final_layer.*\")", pattern.Span);
            foreach (var weight in matrices) weight.Unquantized = true;
        }
    }

    /// <summary>
    /// Resolves each preset's targets to the graph's linear layers (2-D "….weight"), reporting a malformed pattern, one
    /// that names no linear layer or a layer the graph does not train, and slices the named format does not split the
    /// layer into. A layer named by several targets of a preset takes the first.
    /// </summary>
    private BoundLora BindLoraPresets(BoundModel model, LoraSpec lora)
    {
        var linears = _allWeights.Where(w => w.Shape.Count == 2 && w.Key.EndsWith(".weight", StringComparison.Ordinal)).Select(w => w.Module).ToList();
        var formats = new HashSet<string>(_graph.LoraAliases.Select(a => a.Format));
        var presets = new List<BoundLoraPreset>();
        foreach (var preset in lora.Presets)
        {
            if (preset.Split != null && !formats.Contains(preset.Split))
            {
                Error(DiagnosticIds.InvalidSchema,
                    $"LoRA preset '{preset.Name}': \"split\" names \"{preset.Split}\", which is not in \"lora_formats\" (known: {(formats.Count == 0 ? "none" : string.Join(", ", formats.OrderBy(f => f, StringComparer.Ordinal)))})",
                    preset.Span);
                continue;
            }
            var targets = new List<BoundLoraTarget>();
            var taken = new HashSet<string>();
            foreach (var target in preset.Targets)
            {
                string where = $"LoRA preset '{preset.Name}', target \"{target.Module}\"";
                string holes = target.Module.Replace("{i}", "");
                if (holes.Length == 0 || !holes.All(c => char.IsLetterOrDigit(c) || c == '_' || c == '.' || c == '*'))
                {
                    Error(DiagnosticIds.InvalidSchema, $"{where}: a target is a module key pattern, with {{i}} for a block index and * for any text (\"double_blocks.{{i}}.*\")", target.Span);
                    continue;
                }
                var matched = linears.Where(m => MatchesModule(target.Module, m)).ToList();
                if (matched.Count == 0)
                {
                    Error(DiagnosticIds.UnknownWeight, $"{where} names no linear layer of the graph (no 2-D weight '{target.Module}.weight')", target.Span);
                    continue;
                }
                var frozen = matched.Where(m => !_graph.Trainable.Any(pattern => MatchesModule(pattern, m))).ToList();
                if (frozen.Count > 0)
                {
                    Error(DiagnosticIds.InvalidSchema, $"{where}: '{frozen[0]}' is not \"trainable\" in this graph, so the training pass would apply no adapter there", target.Span);
                    continue;
                }
                if (target.Slices.Count > 0 && preset.Split == null)
                {
                    Error(DiagnosticIds.InvalidSchema, $"{where}: \"slices\" pick row blocks of a fused layer, which needs the preset's \"split\"", target.Span);
                    continue;
                }
                foreach (string module in matched)
                {
                    if (!taken.Add(module)) continue;
                    IReadOnlyList<int>? parts = null;
                    if (target.Slices.Count > 0)
                    {
                        var blocks = model.LoraAliases.Where(a => a.Format == preset.Split && a.Module == module).ToList();
                        if (blocks.Count < 2)
                        {
                            Error(DiagnosticIds.InvalidSchema, $"{where}: \"{preset.Split}\" does not split '{module}' into row blocks, so it has no slices", target.Span);
                            continue;
                        }
                        var indices = new List<int>();
                        foreach (string slice in target.Slices)
                        {
                            var hits = Enumerable.Range(0, blocks.Count)
                                .Where(i => blocks[i].Alias == slice || blocks[i].Alias.EndsWith("." + slice, StringComparison.Ordinal)).ToList();
                            if (hits.Count != 1)
                                Error(DiagnosticIds.InvalidSchema,
                                    $"{where}: slice \"{slice}\" matches {(hits.Count == 0 ? "none" : hits.Count.ToString(CultureInfo.InvariantCulture))} of the row blocks of '{module}' ({string.Join(", ", blocks.Select(b => b.Alias))})",
                                    target.Span);
                            else if (!indices.Contains(hits[0])) indices.Add(hits[0]);
                        }
                        indices.Sort();
                        parts = indices;
                    }
                    targets.Add(new BoundLoraTarget(module, parts));
                }
            }
            // In weight order, as the runtime walks the parameter table.
            targets.Sort((a, b) => linears.IndexOf(a.Module).CompareTo(linears.IndexOf(b.Module)));
            presets.Add(new BoundLoraPreset(preset.Name, preset.Description ?? "", preset.Init, preset.Split, targets));
        }
        return new BoundLora(lora.DefaultPreset, lora.Rank, lora.Alpha ?? lora.Rank, presets);
    }

    /// <summary>
    /// Checks every alias against a declared 2-D weight ("{module}.weight") and turns split row sizes into offsets;
    /// the parts of a split module must cover its rows exactly.
    /// </summary>
    private void BindLoraAliases(BoundModel model, Scope root)
    {
        foreach (var module in _graph.LoraAliases.GroupBy(a => (a.Format, a.Module)))
        {
            var parts = module.OrderBy(a => a.Part).ToList();
            var weight = _allWeights.FirstOrDefault(w => w.Key == module.Key.Module + ".weight");
            if (weight == null)
            {
                // Switched off by a condition for this model (guidance_in without guidance_embed): nothing to alias.
                if (root.LookupWeight(module.Key.Module + ".weight").DisabledByCondition) continue;
                Error(DiagnosticIds.UnknownWeight, $"LoRA alias for '{module.Key.Module}': the graph declares no weight '{module.Key.Module}.weight'", parts[0].Span);
                continue;
            }
            if (weight.Shape.Count != 2)
            {
                Error(DiagnosticIds.ShapeMismatch, $"LoRA alias for '{module.Key.Module}': its weight is {ShapeText(weight.Shape)}, not a linear layer's [out, in]", parts[0].Span);
                continue;
            }
            int offset = 0;
            foreach (var part in parts)
            {
                int Rows(string expression, string what) => (int)root.Evaluate(expression, allowSizes: false).ToInteger(what);
                int rows, aliasRow;
                try
                {
                    rows = part.RowsExpression.Length == 0 ? (int)weight.Shape[0] : Rows(part.RowsExpression, "a row count");
                    aliasRow = part.AliasRowExpression.Length == 0 ? 0 : Rows(part.AliasRowExpression, "an alias row");
                }
                catch (ExpressionException e)
                {
                    Error(DiagnosticIds.InvalidExpression, e.Message, part.Span);
                    return;
                }
                // An empty name: the format has no adapter on this row block (it still takes its rows).
                if (part.Alias.Length > 0)
                    model.LoraAliases.Add(new BoundLoraAlias(part.Format, part.Alias, module.Key.Module, offset, rows, aliasRow));
                offset += rows;
            }
            if (offset != weight.Shape[0])
                Error(DiagnosticIds.ShapeMismatch,
                    $"LoRA alias for '{module.Key.Module}': its parts cover {offset} rows, the weight has {weight.Shape[0]}", parts[0].Span);
        }
    }

    private static string ShapeText(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";

    private void BindParams()
    {
        var given = _model.Params.ToDictionary(p => p.Name, p => p.Value);
        foreach (var declaration in _graph.Params)
        {
            if (!given.TryGetValue(declaration.Name, out var value))
            {
                Error(DiagnosticIds.InvalidParams,
                    $"param '{declaration.Name}' ({TypeName(declaration.Type)}) is missing: graph '{_graph.Name}' needs {string.Join(", ", _graph.Params.Select(p => p.Name))}",
                    _model.GraphSpan);
                continue;
            }
            var converted = ConvertParam(declaration, value);
            if (converted != null) _constants[declaration.Name] = converted;
        }
        foreach (var param in _model.Params)
            if (_graph.Params.All(p => p.Name != param.Name))
                Error(DiagnosticIds.InvalidParams,
                    $"unknown param '{param.Name}': graph '{_graph.Name}' takes {string.Join(", ", _graph.Params.Select(p => p.Name))}", param.Value.Span);
    }

    private SchemaValue? ConvertParam(ParamDeclarationSpec declaration, AttributeValue value)
    {
        string problem = $"param '{declaration.Name}' must be {TypeName(declaration.Type)}";
        switch (declaration.Type)
        {
            case ParamType.Bool when value.Kind == AttributeKind.Bool:
                return SchemaValue.Of(value.Text == "true");
            case ParamType.Number when value.Kind == AttributeKind.Number:
                return SchemaValue.Of(ParseNumber(value.Text));
            case ParamType.Int when value.Kind == AttributeKind.Number && IsWhole(value.Text):
                return SchemaValue.Of(ParseNumber(value.Text));
            case ParamType.String when value.Kind == AttributeKind.String:
                return SchemaValue.OfText(value.Text);
            case ParamType.IntList when value.Kind == AttributeKind.List &&
                                        value.Items.All(i => i.Kind == AttributeKind.Number && IsWhole(i.Text)):
                return SchemaValue.Of(value.Items.Select(i => ParseNumber(i.Text)).ToList());
        }
        Error(DiagnosticIds.InvalidParams, $"{problem}, got {value}", value.Span);
        return null;
    }

    private static bool IsWhole(string text)
    {
        double v = ParseNumber(text);
        return Math.Abs(v - Math.Round(v)) < 1e-9;
    }

    private static double ParseNumber(string text) => double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);

    private static string TypeName(ParamType type) => type switch
    {
        ParamType.Int => "an integer",
        ParamType.Number => "a number",
        ParamType.Bool => "true or false",
        ParamType.String => "a string",
        _ => "a list of integers",
    };

    private void BindLets()
    {
        foreach (var let in _graph.Lets)
        {
            if (_constants.ContainsKey(let.Name))
            {
                Error(DiagnosticIds.DuplicateName, $"let '{let.Name}' has the name of a param", let.Span);
                continue;
            }
            try
            {
                _constants[let.Name] = Expression.Parse(let.Expression).Evaluate(LookupConstant);
            }
            catch (ExpressionException e)
            {
                Error(DiagnosticIds.InvalidExpression, $"let '{let.Name}': {e.Message}", let.Span);
            }
        }
    }

    private void CheckRequirements()
    {
        foreach (var requirement in _graph.Requirements)
        {
            try
            {
                var expression = Expression.Parse(requirement.That);
                if (expression.Evaluate(LookupConstant).ToBoolean("a requirement")) continue;
                // Point at the model's first param that the requirement reads: that is the line to fix.
                var names = expression.Names().Distinct().ToList();
                var param = _model.Params.FirstOrDefault(p => names.Contains(p.Name));
                string values = string.Join(", ", names.Where(_constants.ContainsKey).Select(n => $"{n} = {_constants[n]}"));
                Error(DiagnosticIds.InvalidParams, $"invalid params: {requirement.Message} ({requirement.That}; here {values})",
                    param?.Value.Span ?? _model.GraphSpan);
            }
            catch (ExpressionException e)
            {
                Error(DiagnosticIds.InvalidExpression, $"requirement \"{requirement.That}\": {e.Message}", requirement.Span);
            }
        }
    }

    private SchemaValue? LookupConstant(string name) => _constants.TryGetValue(name, out var v) ? v : null;

    private SchemaValue? LookupWithSizes(string name) =>
        LookupConstant(name) ?? (_sizes.Contains(name) ? SchemaValue.Of(SymbolicDim.Symbol(name)) : null);

    private List<SymbolicDim>? EvaluateShape(EquatableArray<AttributeValue> dims, string what, Scope scope, bool allowSizes)
    {
        var shape = new List<SymbolicDim>();
        foreach (var dim in dims)
        {
            try
            {
                var value = scope.Evaluate(dim, allowSizes);
                var d = value.ToDim($"a dimension of {what}");
                if (!allowSizes && !d.IsConstant) throw new ExpressionException($"a dimension of {what} must be a constant");
                if (d.IsConstant && d.Constant <= 0) throw new ExpressionException($"a dimension of {what} is {d.Constant}; sizes must be positive");
                shape.Add(d);
            }
            catch (ExpressionException e)
            {
                Error(DiagnosticIds.InvalidExpression, e.Message, dim.Span);
                return null;
            }
        }
        return shape;
    }

    private static SchemaValue Evaluate(AttributeValue value, Func<string, SchemaValue?> lookup)
    {
        switch (value.Kind)
        {
            case AttributeKind.Number: return SchemaValue.Of(ParseNumber(value.Text));
            case AttributeKind.Bool: return SchemaValue.Of(value.Text == "true");
            case AttributeKind.String: return Expression.Parse(value.Text).Evaluate(lookup);
            default:
                return SchemaValue.Of(value.Items.Select(i => Evaluate(i, lookup).ToNumber("a list entry")).ToList());
        }
    }

    private bool? EvaluateCondition(string? condition, SourceSpan span, Scope scope)
    {
        if (condition == null) return true;
        try
        {
            return scope.Evaluate(condition, allowSizes: false).ToBoolean($"condition \"{condition}\"");
        }
        catch (ExpressionException e)
        {
            Error(DiagnosticIds.InvalidExpression, e.Message, span);
            return null;
        }
    }

    private void DeclareWeights(EquatableArray<TensorDeclarationSpec> declarations, Scope scope, BoundRepeat? block, string prefix,
        (string Prefix, string Index, long Value)? loop = null)
    {
        foreach (var declaration in declarations)
        {
            bool? enabled = EvaluateCondition(declaration.Condition, declaration.Span, scope);
            if (enabled == null) continue;
            string key = prefix + declaration.Name;
            if (_allWeights.Any(w => w.Key == key) || scope.HasWeight(declaration.Name))
            {
                Error(DiagnosticIds.DuplicateName, $"weight '{key}' is declared twice", declaration.Span);
                continue;
            }
            if (enabled == false)
            {
                scope.DisableWeight(declaration.Name);
                continue;
            }
            var shape = EvaluateShape(declaration.Shape, $"weight '{key}'", scope, allowSizes: false);
            if (shape == null) continue;
            var weight = new BoundWeight(key, declaration.Name, shape.Select(d => d.Constant).ToList(), block, declaration.Span) { Loop = loop };
            scope.AddWeight(weight);
            _allWeights.Add(weight);
            block?.Weights.Add(weight);
        }
    }

    private void BindStatements(EquatableArray<StatementSpec> statements, Scope scope, BoundScope into)
    {
        foreach (var statement in statements)
        {
            switch (statement.Kind)
            {
                case StatementKind.If:
                    if (EvaluateCondition(statement.Condition, statement.Span, scope) == true)
                        BindStatements(statement.Body, scope, into);
                    break;
                case StatementKind.Repeat:
                    BindRepeat(statement, scope, into);
                    break;
                default:
                    BindOp(statement, scope, into);
                    break;
            }
        }
    }

    private void BindRepeat(StatementSpec statement, Scope scope, BoundScope into)
    {
        long count;
        try
        {
            count = scope.Evaluate(statement.Count!, allowSizes: false).ToInteger("the repeat count");
        }
        catch (ExpressionException e)
        {
            Error(DiagnosticIds.InvalidExpression, e.Message, statement.Span);
            return;
        }
        if (!statement.IsTemplateUse && (!SchemaParser.IsIdentifier(statement.Index!) || !(statement.Prefix ?? "").Contains("{" + statement.Index + "}")))
        {
            Error(DiagnosticIds.InvalidSchema, $"a repeat's prefix must contain its index as {{{statement.Index}}}", statement.Span);
            return;
        }
        if (statement.Unroll || _unrollLoops)
        {
            BindUnrolled(statement, count, scope, into);
            return;
        }
        var repeat = new BoundRepeat(count, statement.Index!, scope.Prefix + statement.Prefix!, statement.Span);
        var inner = new Scope(this, scope, repeat);
        DeclareWeights(statement.Weights, inner, repeat, scope.Prefix + statement.Prefix!);
        if (count <= 0)
        {
            // A zero-depth block stack is legal (a model without single blocks); its weights are then not expected.
            foreach (var w in repeat.Weights) { w.IsUsed = true; _allWeights.Remove(w); }
            return;
        }
        BindStatements(statement.Body, inner, repeat.Body);
        into.Statements.Add(repeat);
    }

    /// <summary>
    /// Every iteration bound on its own, with the index (and the block's lets) as constants, into the enclosing
    /// statement list: shapes and weights may differ per iteration (a VAE's levels), and the code is straight.
    /// </summary>
    private void BindUnrolled(StatementSpec statement, long count, Scope scope, BoundScope into)
    {
        for (long n = 0; n < count; n++)
        {
            long index = statement.Reverse ? count - 1 - n : n;
            string prefix = scope.Prefix + statement.Prefix!.Replace("{" + statement.Index + "}", index.ToString(CultureInfo.InvariantCulture));
            var iteration = new Scope(this, scope, null, prefix, scope.Suffix + "_" + index.ToString(CultureInfo.InvariantCulture));
            iteration.SetConstant(statement.Index!, SchemaValue.Of(index));
            foreach (var let in statement.Lets)
            {
                try
                {
                    iteration.SetConstant(let.Name, iteration.Evaluate(let.Expression, allowSizes: false));
                }
                catch (ExpressionException e)
                {
                    Error(DiagnosticIds.InvalidExpression, $"let '{let.Name}' ({statement.Index} = {index}): {e.Message}", let.Span);
                }
            }
            // A loop unrolled for the training pass keeps its weights in the block arrays of the forward class.
            var loop = statement.Unroll ? ((string, string, long)?)null : (scope.Prefix + statement.Prefix!, statement.Index!, index);
            DeclareWeights(statement.Weights, iteration, null, prefix, loop);
            // A template used without its own prefix sits inside an iteration whose comment already says where.
            string comment = !statement.IsTemplateUse ? prefix.TrimEnd('.')
                : statement.Prefix!.Length == 0 ? statement.Op
                : $"{statement.Op}: {prefix.TrimEnd('.')}";
            var marker = new BoundComment(comment, statement.Span);
            into.Statements.Add(marker);
            int start = into.Statements.Count;
            BindStatements(statement.Body, iteration, into);
            // An iteration of one of the graph's repeated blocks (not a template): the unit the training pass recomputes.
            if (loop != null) marker.BlockLength = into.Statements.Count - start;
        }
    }

    private void BindOp(StatementSpec statement, Scope scope, BoundScope into)
    {
        if (!OpCatalog.All.TryGetValue(statement.Op, out var definition))
        {
            Error(DiagnosticIds.UnknownOp,
                $"unknown op '{statement.Op}' (known: {string.Join(", ", OpCatalog.All.Keys.OrderBy(k => k, StringComparer.Ordinal))})",
                statement.Span);
            return;
        }
        var op = new BoundOp(definition, statement.Span);
        var binder = new OpBinder(op, statement, scope, _diagnostics);
        try
        {
            definition.Bind(binder);
            binder.RejectUnknownArguments();
            op.IsTrainable = op.Weights.Values.Any(weight => weight != null && _graph.Trainable.Any(pattern => MatchesModule(pattern, weight.Module)));
            into.Statements.Add(op);
        }
        catch (OpBinder.BindFailed)
        {
            // The diagnostic is recorded. Outputs become error values so that later uses stay quiet
            // instead of repeating the same mistake as "unknown value".
            foreach (var output in statement.Outputs)
                scope.BindError(output.Name);
        }
    }

    private void Error(string id, string message, SourceSpan span) => _diagnostics.Add(new SchemaDiagnostic(id, message, span));

    /// <summary>"double_blocks.{i}.*" against a module key (with "{i}" or a number where the pattern has {i}).</summary>
    internal static bool MatchesModule(string pattern, string module)
    {
        string regex = "^" + System.Text.RegularExpressions.Regex.Escape(pattern)
            .Replace(@"\{i}", @"(\{i}|[0-9]+)").Replace(@"\*", ".*") + "$";
        return System.Text.RegularExpressions.Regex.IsMatch(module, regex);
    }

    /// <summary>Names visible at one place of the graph: the file's top level, or a repeated block inside it.</summary>
    internal sealed class Scope
    {
        private readonly GraphBinder _binder;
        private readonly Scope? _parent;
        private readonly BoundRepeat? _block;
        private readonly Dictionary<string, BoundValue> _values = new();
        private readonly Dictionary<string, BoundWeight> _weights = new();
        private readonly HashSet<string> _disabledWeights = new();
        private readonly Dictionary<string, SchemaValue> _constants = new();

        public Scope(GraphBinder binder, Scope? parent, BoundRepeat? block, string? prefix = null, string? suffix = null)
        {
            _binder = binder;
            _parent = parent;
            _block = block;
            Prefix = prefix ?? parent?.Prefix ?? "";
            Suffix = suffix ?? parent?.Suffix ?? "";
        }

        /// <summary>The key prefix of an unrolled iteration ("encoder.down.1."), prepended to nested prefixes.</summary>
        public string Prefix { get; }

        /// <summary>Appended to the names of values local to an unrolled iteration, so each gets its own variable.</summary>
        public string Suffix { get; }

        public void SetConstant(string name, SchemaValue value) => _constants[name] = value;

        private SchemaValue? LookupConstant(string name, bool allowSizes) =>
            _constants.TryGetValue(name, out var v) ? v
            : _parent != null ? _parent.LookupConstant(name, allowSizes)
            : allowSizes ? _binder.LookupWithSizes(name) : _binder.LookupConstant(name);

        public BoundValue? LookupValue(string name) =>
            _values.TryGetValue(name, out var v) ? v : _parent?.LookupValue(name);

        public (BoundWeight? Weight, bool DisabledByCondition) LookupWeight(string name)
        {
            if (_weights.TryGetValue(name, out var w)) return (w, false);
            if (_disabledWeights.Contains(name)) return (null, true);
            return _parent?.LookupWeight(name) ?? (null, false);
        }

        public void BindError(string name)
        {
            _values[name] = new BoundValue(_binder._nextValueId++, name, new SymbolicDim[0]) { IsError = true };
        }

        public bool HasWeight(string name) => _weights.ContainsKey(name) || _disabledWeights.Contains(name);
        public void AddWeight(BoundWeight weight) => _weights[weight.LocalName] = weight;
        public void DisableWeight(string name) => _disabledWeights.Add(name);

        public BoundValue NewValue(string name, IReadOnlyList<SymbolicDim> shape, BoundValue? viewOf)
        {
            if (_binder._sizes.Contains(name) || LookupConstant(name, allowSizes: false) != null)
                throw new ExpressionException($"value '{name}' has the name of a param, let or size; give it another name");
            // A block writing to a name of the enclosing scope carries it to the next iteration and past the loop.
            var owner = this;
            bool crossesLoop = false;
            while (!owner._values.ContainsKey(name) && owner._parent?.LookupValue(name) != null)
            {
                crossesLoop |= owner._block != null;
                owner = owner._parent;
            }
            var value = new BoundValue(_binder._nextValueId++, name, shape, viewOf) { EmitName = name + owner.Suffix };
            if (crossesLoop)
            {
                value.IsCarriedOutOfBlock = true;
                var previous = owner._values[name];
                if (!previous.Shape.SequenceEqual(shape))
                    throw new ExpressionException(
                        $"'{name}' is {previous.ShapeText} outside the block but {value.ShapeText} inside: a repeated block must keep the shapes it carries");
            }
            owner._values[name] = value;
            return value;
        }

        public SchemaValue Evaluate(AttributeValue value, bool allowSizes = true) =>
            GraphBinder.Evaluate(value, name => LookupConstant(name, allowSizes));

        public SchemaValue Evaluate(string expression, bool allowSizes = true) =>
            Expression.Parse(expression).Evaluate(name => LookupConstant(name, allowSizes));

        public string Suggest(string name)
        {
            var names = AllValueNames().Distinct().ToList();
            var close = names.OrderBy(n => EditDistance(n, name)).FirstOrDefault();
            return close != null && EditDistance(close, name) <= Math.Max(2, name.Length / 3) ? $" (did you mean '{close}'?)" : "";
        }

        public string SuggestWeight(string name)
        {
            var names = AllWeightNames().Distinct().ToList();
            var close = names.OrderBy(n => EditDistance(n, name)).FirstOrDefault();
            return close != null && EditDistance(close, name) <= Math.Max(2, name.Length / 3) ? $" (did you mean '{close}'?)" : "";
        }

        private IEnumerable<string> AllValueNames() => _values.Keys.Concat(_parent?.AllValueNames() ?? Enumerable.Empty<string>());
        private IEnumerable<string> AllWeightNames() => _weights.Keys.Concat(_parent?.AllWeightNames() ?? Enumerable.Empty<string>());

        private static int EditDistance(string a, string b)
        {
            var d = new int[a.Length + 1, b.Length + 1];
            for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
            for (int j = 0; j <= b.Length; j++) d[0, j] = j;
            for (int i = 1; i <= a.Length; i++)
                for (int j = 1; j <= b.Length; j++)
                    d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            return d[a.Length, b.Length];
        }
    }
}
