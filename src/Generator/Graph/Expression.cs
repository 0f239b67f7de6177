using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace InFluxEdit.Generator.Graph;

/// <summary>
/// The small expression language of schemas: numbers, 'quoted' strings, names (params, lets, runtime sizes), + - * / %,
/// comparisons, &amp;&amp; || !, indexing (axes_dim[0]) and the functions sum, len, sqrt. Used for shapes,
/// attribute values and requirements such as "sum(axes_dim) == head_dim".
/// </summary>
public abstract class Expression
{
    public abstract SchemaValue Evaluate(Func<string, SchemaValue?> lookup);

    public static Expression Parse(string text) => new ExpressionParser(text).ParseAll();

    /// <summary>Names the expression reads, so errors can say which param is involved.</summary>
    public abstract IEnumerable<string> Names();
}

public sealed class ExpressionException : Exception
{
    public ExpressionException(string message) : base(message) { }
}

/// <summary>A value in the schema language: a number, a boolean, a list of numbers, a string, or a symbolic dimension.</summary>
public sealed class SchemaValue
{
    private SchemaValue(double? number, bool? boolean, IReadOnlyList<double>? list, SymbolicDim? dim, string? text = null)
    {
        Number = number; Boolean = boolean; List = list; Dim = dim; Text = text;
    }

    /// <summary>A string param's value (compared with == and != only).</summary>
    public string? Text { get; }

    public static SchemaValue OfText(string text) => new(null, null, null, null, text);

    public double? Number { get; }
    public bool? Boolean { get; }
    public IReadOnlyList<double>? List { get; }
    public SymbolicDim? Dim { get; }

    public static SchemaValue Of(double n) => new(n, null, null, null);
    public static SchemaValue Of(bool b) => new(null, b, null, null);
    public static SchemaValue Of(IReadOnlyList<double> list) => new(null, null, list, null);
    public static SchemaValue Of(SymbolicDim d) => d.IsConstant ? Of(d.Constant) : new(null, null, null, d);

    public string Kind => Number.HasValue ? "a number" : Boolean.HasValue ? "a boolean" : List != null ? "a list" : Text != null ? "a string" : "a runtime size";

    public bool IsWholeNumber => Number.HasValue && Math.Abs(Number.Value - Math.Round(Number.Value)) < 1e-9;

    public SymbolicDim ToDim(string context)
    {
        if (Dim != null) return Dim;
        if (IsWholeNumber) return SymbolicDim.Of((long)Math.Round(Number!.Value));
        if (Number.HasValue) throw new ExpressionException($"{context} is {Number.Value.ToString(CultureInfo.InvariantCulture)}, not a whole number");
        throw new ExpressionException($"{context} is {Kind}, expected a size");
    }

    public long ToInteger(string context)
    {
        var d = ToDim(context);
        if (!d.IsConstant) throw new ExpressionException($"{context} depends on runtime size {d}; a constant is needed here");
        return d.Constant;
    }

    public double ToNumber(string context)
    {
        if (Number.HasValue) return Number.Value;
        throw new ExpressionException($"{context} is {Kind}, expected a number");
    }

    public bool ToBoolean(string context)
    {
        if (Boolean.HasValue) return Boolean.Value;
        throw new ExpressionException($"{context} is {Kind}, expected true or false");
    }

    public IReadOnlyList<double> ToList(string context)
    {
        if (List != null) return List;
        throw new ExpressionException($"{context} is {Kind}, expected a list");
    }

    public override string ToString()
    {
        if (Number.HasValue) return Number.Value.ToString("R", CultureInfo.InvariantCulture);
        if (Boolean.HasValue) return Boolean.Value ? "true" : "false";
        if (List != null) return "[" + string.Join(", ", List.Select(v => v.ToString("R", CultureInfo.InvariantCulture))) + "]";
        if (Text != null) return "'" + Text + "'";
        return Dim!.ToString();
    }
}

internal sealed class NumberExpr : Expression
{
    private readonly double _value;
    public NumberExpr(double value) => _value = value;
    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup) => SchemaValue.Of(_value);
    public override IEnumerable<string> Names() => Enumerable.Empty<string>();
}

internal sealed class TextExpr : Expression
{
    private readonly string _value;
    public TextExpr(string value) => _value = value;
    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup) => SchemaValue.OfText(_value);
    public override IEnumerable<string> Names() => Enumerable.Empty<string>();
}

internal sealed class NameExpr : Expression
{
    private readonly string _name;
    public NameExpr(string name) => _name = name;
    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup) =>
        lookup(_name) ?? throw new ExpressionException($"unknown name '{_name}'");
    public override IEnumerable<string> Names() => new[] { _name };
}

internal sealed class UnaryExpr : Expression
{
    private readonly char _op;
    private readonly Expression _operand;
    public UnaryExpr(char op, Expression operand) { _op = op; _operand = operand; }

    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup)
    {
        var v = _operand.Evaluate(lookup);
        if (_op == '!') return SchemaValue.Of(!v.ToBoolean("the operand of '!'"));
        if (v.Dim != null) return SchemaValue.Of(v.Dim.Times(-1));
        return SchemaValue.Of(-v.ToNumber("the operand of '-'"));
    }

    public override IEnumerable<string> Names() => _operand.Names();
}

internal sealed class BinaryExpr : Expression
{
    private readonly string _op;
    private readonly Expression _left, _right;
    public BinaryExpr(string op, Expression left, Expression right) { _op = op; _left = left; _right = right; }

    public override IEnumerable<string> Names() => _left.Names().Concat(_right.Names());

    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup)
    {
        var a = _left.Evaluate(lookup);
        if (_op == "&&") return SchemaValue.Of(a.ToBoolean("the left of '&&'") && _right.Evaluate(lookup).ToBoolean("the right of '&&'"));
        if (_op == "||") return SchemaValue.Of(a.ToBoolean("the left of '||'") || _right.Evaluate(lookup).ToBoolean("the right of '||'"));
        var b = _right.Evaluate(lookup);

        if (a.Dim != null || b.Dim != null) return EvaluateSymbolic(a, b);

        switch (_op)
        {
            case "==": return SchemaValue.Of(Same(a, b));
            case "!=": return SchemaValue.Of(!Same(a, b));
        }
        double x = a.ToNumber($"the left of '{_op}'"), y = b.ToNumber($"the right of '{_op}'");
        switch (_op)
        {
            case "+": return SchemaValue.Of(x + y);
            case "-": return SchemaValue.Of(x - y);
            case "*": return SchemaValue.Of(x * y);
            case "/":
                if (y == 0) throw new ExpressionException("division by zero");
                return SchemaValue.Of(x / y);
            case "%":
                if (y == 0) throw new ExpressionException("modulo by zero");
                return SchemaValue.Of(x - y * Math.Floor(x / y));
            case "<": return SchemaValue.Of(x < y);
            case "<=": return SchemaValue.Of(x <= y);
            case ">": return SchemaValue.Of(x > y);
            case ">=": return SchemaValue.Of(x >= y);
        }
        throw new ExpressionException($"unknown operator '{_op}'");
    }

    private SchemaValue EvaluateSymbolic(SchemaValue a, SchemaValue b)
    {
        switch (_op)
        {
            case "+": return SchemaValue.Of(a.ToDim("the left of '+'") + b.ToDim("the right of '+'"));
            case "-": return SchemaValue.Of(a.ToDim("the left of '-'") - b.ToDim("the right of '-'"));
            case "==": return SchemaValue.Of(a.ToDim("the left of '=='").Equals(b.ToDim("the right of '=='")));
            case "!=": return SchemaValue.Of(!a.ToDim("the left of '!='").Equals(b.ToDim("the right of '!='")));
            case "*":
                if (a.Dim == null) return SchemaValue.Of(b.Dim!.Times(a.ToInteger("a factor of a runtime size")));
                if (b.Dim == null) return SchemaValue.Of(a.Dim.Times(b.ToInteger("a factor of a runtime size")));
                throw new ExpressionException("two runtime sizes cannot be multiplied: shapes stay linear in B, Li, Lt");
        }
        throw new ExpressionException($"'{_op}' cannot take a runtime size");
    }

    private static bool Same(SchemaValue a, SchemaValue b)
    {
        if (a.Number.HasValue && b.Number.HasValue) return Math.Abs(a.Number.Value - b.Number.Value) < 1e-9;
        if (a.Boolean.HasValue && b.Boolean.HasValue) return a.Boolean == b.Boolean;
        if (a.List != null && b.List != null) return a.List.SequenceEqual(b.List);
        if (a.Text != null && b.Text != null) return a.Text == b.Text;
        throw new ExpressionException($"cannot compare {a.Kind} with {b.Kind}");
    }
}

internal sealed class ConditionalExpr : Expression
{
    private readonly Expression _condition, _whenTrue, _whenFalse;

    public ConditionalExpr(Expression condition, Expression whenTrue, Expression whenFalse)
    {
        _condition = condition;
        _whenTrue = whenTrue;
        _whenFalse = whenFalse;
    }

    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup) =>
        _condition.Evaluate(lookup).ToBoolean("the condition of '?:'") ? _whenTrue.Evaluate(lookup) : _whenFalse.Evaluate(lookup);

    public override IEnumerable<string> Names() => _condition.Names().Concat(_whenTrue.Names()).Concat(_whenFalse.Names());
}

internal sealed class CallExpr : Expression
{
    private readonly string _function;
    private readonly List<Expression> _arguments;
    public CallExpr(string function, List<Expression> arguments) { _function = function; _arguments = arguments; }

    public override IEnumerable<string> Names() => _arguments.SelectMany(a => a.Names());

    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup)
    {
        var values = _arguments.Select(a => a.Evaluate(lookup)).ToList();
        switch (_function)
        {
            case "sum": return SchemaValue.Of(One(values).ToList("the argument of sum()").Sum());
            case "len": return SchemaValue.Of(One(values).ToList("the argument of len()").Count);
            case "sqrt": return SchemaValue.Of(Math.Sqrt(One(values).ToNumber("the argument of sqrt()")));
            case "pow": return SchemaValue.Of(Math.Pow(Two(values).A.ToNumber("the base of pow()"), Two(values).B.ToNumber("the exponent of pow()")));
            case "min": return SchemaValue.Of(Math.Min(Two(values).A.ToNumber("an argument of min()"), Two(values).B.ToNumber("an argument of min()")));
            case "max": return SchemaValue.Of(Math.Max(Two(values).A.ToNumber("an argument of max()"), Two(values).B.ToNumber("an argument of max()")));
            default: throw new ExpressionException($"unknown function '{_function}' (known: sum, len, sqrt, pow, min, max)");
        }
    }

    private SchemaValue One(List<SchemaValue> values) =>
        values.Count == 1 ? values[0] : throw new ExpressionException($"{_function}() takes one argument");

    private (SchemaValue A, SchemaValue B) Two(List<SchemaValue> values) =>
        values.Count == 2 ? (values[0], values[1]) : throw new ExpressionException($"{_function}() takes two arguments");
}

internal sealed class IndexExpr : Expression
{
    private readonly Expression _list, _index;
    public IndexExpr(Expression list, Expression index) { _list = list; _index = index; }

    public override IEnumerable<string> Names() => _list.Names().Concat(_index.Names());

    public override SchemaValue Evaluate(Func<string, SchemaValue?> lookup)
    {
        var list = _list.Evaluate(lookup).ToList("an indexed value");
        long i = _index.Evaluate(lookup).ToInteger("an index");
        if (i < 0 || i >= list.Count) throw new ExpressionException($"index {i} is outside a list of {list.Count}");
        return SchemaValue.Of(list[(int)i]);
    }
}

internal sealed class ExpressionParser
{
    private static readonly string[][] Precedence =
    {
        new[] { "||" }, new[] { "&&" }, new[] { "==", "!=" }, new[] { "<=", ">=", "<", ">" }, new[] { "+", "-" }, new[] { "*", "/", "%" },
    };

    /// <summary>
    /// Bounds on nesting and on operators: parsing and evaluation recurse, and a stack overflow would end the compiler
    /// rather than report a diagnostic. Real shape expressions use a handful of each.
    /// </summary>
    private const int MaxNesting = 64, MaxOperators = 512;

    private readonly string _text;
    private int _pos;
    private int _nesting;
    private int _operators;

    public ExpressionParser(string text) => _text = text;

    private void Operator()
    {
        if (++_operators > MaxOperators) throw new ExpressionException($"more than {MaxOperators} operators in one expression");
    }

    private T Nested<T>(Func<T> parse)
    {
        if (++_nesting > MaxNesting) throw new ExpressionException($"an expression nests more than {MaxNesting} levels deep");
        T result = parse();
        _nesting--;
        return result;
    }

    public Expression ParseAll()
    {
        var e = ParseConditional();
        SkipSpaces();
        if (_pos < _text.Length) throw new ExpressionException($"unexpected '{_text.Substring(_pos)}' in \"{_text}\"");
        return e;
    }

    /// <summary>cond ? a : b, the loosest binding, right-associative.</summary>
    private Expression ParseConditional() => Nested(ParseConditionalUnnested);

    private Expression ParseConditionalUnnested()
    {
        var condition = ParseLevel(0);
        SkipSpaces();
        if (Peek() != '?') return condition;
        _pos++;
        var whenTrue = ParseConditional();
        Expect(':');
        var whenFalse = ParseConditional();
        return new ConditionalExpr(condition, whenTrue, whenFalse);
    }

    private Expression ParseLevel(int level)
    {
        if (level == Precedence.Length) return ParseUnary();
        var left = ParseLevel(level + 1);
        while (true)
        {
            SkipSpaces();
            string? op = Precedence[level].FirstOrDefault(o => string.CompareOrdinal(_text, _pos, o, 0, o.Length) == 0);
            if (op == null) return left;
            _pos += op.Length;
            Operator();
            left = new BinaryExpr(op, left, ParseLevel(level + 1));
        }
    }

    private Expression ParseUnary()
    {
        SkipSpaces();
        if (Peek() == '-' || Peek() == '!')
        {
            char op = _text[_pos++];
            Operator();
            return new UnaryExpr(op, Nested(ParseUnary));
        }
        return ParsePostfix(ParsePrimary());
    }

    private Expression ParsePostfix(Expression e)
    {
        SkipSpaces();
        while (Peek() == '[')
        {
            _pos++;
            var index = ParseConditional();
            Expect(']');
            e = new IndexExpr(e, index);
            SkipSpaces();
        }
        return e;
    }

    private Expression ParsePrimary()
    {
        SkipSpaces();
        char c = Peek();
        if (c == '(')
        {
            _pos++;
            var e = ParseConditional();
            Expect(')');
            return e;
        }
        if (c == '\'')
        {
            int end = _text.IndexOf('\'', _pos + 1);
            if (end < 0) throw new ExpressionException($"unterminated string in \"{_text}\"");
            string literal = _text.Substring(_pos + 1, end - _pos - 1);
            _pos = end + 1;
            return new TextExpr(literal);
        }
        if (char.IsDigit(c) || c == '.')
        {
            int start = _pos;
            while (_pos < _text.Length && (char.IsDigit(_text[_pos]) || _text[_pos] == '.' || _text[_pos] == 'e' || _text[_pos] == 'E'))
                _pos++;
            string literal = _text.Substring(start, _pos - start);
            if (!double.TryParse(literal, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                throw new ExpressionException($"invalid number '{literal}' in \"{_text}\"");
            return new NumberExpr(value);
        }
        if (char.IsLetter(c) || c == '_')
        {
            int start = _pos;
            while (_pos < _text.Length && (char.IsLetterOrDigit(_text[_pos]) || _text[_pos] == '_')) _pos++;
            string name = _text.Substring(start, _pos - start);
            SkipSpaces();
            if (Peek() != '(') return new NameExpr(name);
            _pos++;
            var args = new List<Expression>();
            SkipSpaces();
            if (Peek() != ')')
            {
                while (true)
                {
                    args.Add(ParseConditional());
                    SkipSpaces();
                    if (Peek() == ',') { _pos++; continue; }
                    break;
                }
            }
            Expect(')');
            return new CallExpr(name, args);
        }
        throw new ExpressionException(_pos < _text.Length
            ? $"unexpected '{c}' in \"{_text}\""
            : $"\"{_text}\" ends where a value was expected");
    }

    private void Expect(char c)
    {
        SkipSpaces();
        if (Peek() != c) throw new ExpressionException($"expected '{c}' in \"{_text}\"");
        _pos++;
    }

    private char Peek() => _pos < _text.Length ? _text[_pos] : '\0';

    private void SkipSpaces()
    {
        while (_pos < _text.Length && char.IsWhiteSpace(_text[_pos])) _pos++;
    }
}
