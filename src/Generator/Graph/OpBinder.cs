using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Parsing;

namespace InFluxEdit.Generator.Graph;

/// <summary>
/// Binds one op statement: typed access to its arguments with diagnostics at the argument's position.
/// A failed lookup records a diagnostic and throws <see cref="BindFailed"/> so the op's rule stays linear.
/// </summary>
public sealed class OpBinder
{
    private readonly StatementSpec _statement;
    private readonly GraphBinder.Scope _scope;
    private readonly List<SchemaDiagnostic> _diagnostics;
    private readonly HashSet<string> _consumed = new();

    internal OpBinder(BoundOp op, StatementSpec statement, GraphBinder.Scope scope, List<SchemaDiagnostic> diagnostics)
    {
        Op = op;
        _statement = statement;
        _scope = scope;
        _diagnostics = diagnostics;
    }

    public BoundOp Op { get; }

    public sealed class BindFailed : Exception { }

    private ArgumentSpec? Find(string name)
    {
        _consumed.Add(name);
        return _statement.Arguments.FirstOrDefault(a => a.Name == name);
    }

    private ArgumentSpec Require(string name)
    {
        var arg = Find(name);
        if (arg != null) return arg;
        Fail(DiagnosticIds.InvalidSchema, $"{Op.Definition.Name} needs argument \"{name}\" ({Op.Definition.Signature})", _statement.Span);
        throw new BindFailed();
    }

    public bool Has(string name) => _statement.Arguments.Any(a => a.Name == name);

    public BoundValue Value(string name)
    {
        var arg = Require(name);
        var value = ResolveValue(arg.Value, name);
        Op.Values[name] = value;
        return value;
    }

    public List<BoundValue> ValueList(string name)
    {
        var arg = Require(name);
        if (arg.Value.Kind != AttributeKind.List || arg.Value.Items.Count == 0)
        {
            Fail(DiagnosticIds.InvalidSchema, $"\"{name}\" of {Op.Definition.Name} must list value names", arg.Value.Span);
            throw new BindFailed();
        }
        var values = arg.Value.Items.Select(item => ResolveValue(item, name)).ToList();
        Op.ValueLists[name] = values;
        return values;
    }

    private BoundValue ResolveValue(AttributeValue attribute, string argument)
    {
        if (attribute.Kind != AttributeKind.String)
        {
            Fail(DiagnosticIds.InvalidSchema, $"\"{argument}\" of {Op.Definition.Name} must name a value", attribute.Span);
            throw new BindFailed();
        }
        var value = _scope.LookupValue(attribute.Text);
        if (value?.IsError == true) throw new BindFailed();
        if (value != null) return value;
        Fail(DiagnosticIds.UnknownValue, $"unknown value '{attribute.Text}'{_scope.Suggest(attribute.Text)}", attribute.Span);
        throw new BindFailed();
    }

    public BoundWeight Weight(string name)
    {
        var arg = Require(name);
        var weight = ResolveWeight(arg, optional: false)!;
        Op.Weights[name] = weight;
        return weight;
    }

    /// <summary>A weight that may be left out, or declared under a condition that is false for this model.</summary>
    public BoundWeight? OptionalWeight(string name)
    {
        var arg = Find(name);
        BoundWeight? weight = arg == null ? null : ResolveWeight(arg, optional: true);
        Op.Weights[name] = weight;
        return weight;
    }

    private BoundWeight? ResolveWeight(ArgumentSpec arg, bool optional)
    {
        if (arg.Value.Kind != AttributeKind.String)
        {
            Fail(DiagnosticIds.InvalidSchema, $"\"{arg.Name}\" of {Op.Definition.Name} must name a weight", arg.Value.Span);
            throw new BindFailed();
        }
        var lookup = _scope.LookupWeight(arg.Value.Text);
        if (lookup.Weight != null)
        {
            lookup.Weight.IsUsed = true;
            if (!Op.Definition.ReadsWeightsAsProducts) lookup.Weight.ReadOutsideProducts = true;
            return lookup.Weight;
        }
        if (lookup.DisabledByCondition)
        {
            if (optional) return null;
            Fail(DiagnosticIds.UnknownWeight,
                $"weight '{arg.Value.Text}' is switched off by its condition for this model, but {Op.Definition.Name} needs it", arg.Value.Span);
            throw new BindFailed();
        }
        Fail(DiagnosticIds.UnknownWeight, $"unknown weight '{arg.Value.Text}': declare it under \"weights\"{_scope.SuggestWeight(arg.Value.Text)}", arg.Value.Span);
        throw new BindFailed();
    }

    /// <summary>A plain string argument (not an expression), such as a tap's name.</summary>
    public string Text(string name)
    {
        var arg = Require(name);
        if (arg.Value.Kind == AttributeKind.String)
        {
            Op.Texts[name] = arg.Value.Text;
            return arg.Value.Text;
        }
        Fail(DiagnosticIds.InvalidSchema, $"\"{name}\" of {Op.Definition.Name} must be a string", arg.Value.Span);
        throw new BindFailed();
    }

    public SchemaValue Attribute(string name, string? defaultExpression = null)
    {
        var arg = defaultExpression == null ? Require(name) : Find(name);
        SchemaValue value;
        try
        {
            value = arg == null ? _scope.Evaluate(defaultExpression!) : _scope.Evaluate(arg.Value);
        }
        catch (ExpressionException e)
        {
            Fail(DiagnosticIds.InvalidExpression, $"\"{name}\" of {Op.Definition.Name}: {e.Message}", arg?.Value.Span ?? _statement.Span);
            throw new BindFailed();
        }
        Op.Attributes[name] = value;
        return value;
    }

    public long Integer(string name, string? defaultExpression = null) =>
        Convert(name, () => Attribute(name, defaultExpression).ToInteger($"\"{name}\""));

    public double Number(string name, string? defaultExpression = null) =>
        Convert(name, () => Attribute(name, defaultExpression).ToNumber($"\"{name}\""));

    /// <summary>A true/false argument (JSON true or false, or a condition over params), <paramref name="defaultValue"/> when left out.</summary>
    public bool Boolean(string name, bool defaultValue)
    {
        if (Find(name) == null)
        {
            Op.Attributes[name] = SchemaValue.Of(defaultValue);
            return defaultValue;
        }
        return Convert(name, () => Attribute(name).ToBoolean($"\"{name}\""));
    }

    /// <summary>A value argument that may be left out.</summary>
    public BoundValue? OptionalValue(string name) => Has(name) ? Value(name) : null;

    public IReadOnlyList<double> List(string name) =>
        Convert(name, () => Attribute(name).ToList($"\"{name}\""));

    public SymbolicDim Dim(string name) => Convert(name, () => Attribute(name).ToDim($"\"{name}\""));

    private T Convert<T>(string name, Func<T> convert)
    {
        try
        {
            return convert();
        }
        catch (ExpressionException e)
        {
            Fail(DiagnosticIds.InvalidExpression, $"{Op.Definition.Name}: {e.Message}", Find(name)?.Value.Span ?? _statement.Span);
            throw new BindFailed();
        }
    }

    /// <summary>Lists of sizes ("sizes": ["Lt", "Li"]), each an expression.</summary>
    public IReadOnlyList<SymbolicDim> DimList(string name)
    {
        var arg = Require(name);
        if (arg.Value.Kind != AttributeKind.List)
        {
            Fail(DiagnosticIds.InvalidSchema, $"\"{name}\" of {Op.Definition.Name} must be a list of sizes", arg.Value.Span);
            throw new BindFailed();
        }
        var dims = new List<SymbolicDim>();
        foreach (var item in arg.Value.Items)
        {
            try
            {
                dims.Add(_scope.Evaluate(item).ToDim($"an entry of \"{name}\""));
            }
            catch (ExpressionException e)
            {
                Fail(DiagnosticIds.InvalidExpression, e.Message, item.Span);
                throw new BindFailed();
            }
        }
        return dims;
    }

    /// <summary>A shape rule: when it does not hold, a shape-mismatch diagnostic at the argument (or the op).</summary>
    public void Check(bool holds, string message, string? argument = null)
    {
        if (holds) return;
        var span = argument == null ? _statement.Span : _statement.Arguments.FirstOrDefault(a => a.Name == argument)?.Value.Span ?? _statement.Span;
        Fail(DiagnosticIds.ShapeMismatch, $"{Op.Definition.Name}: {message}", span);
        throw new BindFailed();
    }

    /// <summary>Normalises an axis (negative counts from the end) against a rank.</summary>
    public int Axis(string name, int rank)
    {
        long axis = Integer(name);
        long normalised = axis < 0 ? axis + rank : axis;
        Check(normalised >= 0 && normalised < rank, $"axis {axis} is outside a tensor of rank {rank}", name);
        return (int)normalised;
    }

    public int OutputCount => _statement.Outputs.Count;

    public void Outputs(params IReadOnlyList<SymbolicDim>[] shapes) => Outputs(shapes, null);

    public void Outputs(IReadOnlyList<IReadOnlyList<SymbolicDim>> shapes, BoundValue? viewOf)
    {
        if (_statement.Outputs.Count != shapes.Count)
        {
            Fail(DiagnosticIds.InvalidSchema,
                $"{Op.Definition.Name} gives {shapes.Count} output{(shapes.Count == 1 ? "" : "s")} here, \"out\" names {_statement.Outputs.Count}",
                _statement.Span);
            throw new BindFailed();
        }
        for (int i = 0; i < shapes.Count; i++)
        {
            try
            {
                Op.Outputs.Add(_scope.NewValue(_statement.Outputs[i].Name, shapes[i], viewOf));
            }
            catch (ExpressionException e)
            {
                Fail(DiagnosticIds.ShapeMismatch, e.Message, _statement.Outputs[i].Span);
                throw new BindFailed();
            }
        }
    }

    internal void RejectUnknownArguments()
    {
        foreach (var arg in _statement.Arguments)
            if (!_consumed.Contains(arg.Name))
                Fail(DiagnosticIds.InvalidSchema, $"{Op.Definition.Name} has no argument \"{arg.Name}\" ({Op.Definition.Signature})", arg.Value.Span);
    }

    private void Fail(string id, string message, SourceSpan span) => _diagnostics.Add(new SchemaDiagnostic(id, message, span));

    public static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
