using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;

namespace InFluxEdit.Generator.Graph;

/// <summary>
/// A tensor dimension: a constant plus whole multiples of runtime sizes (batch, token counts), such as
/// "Lt + Li". Params are constants at compile time, so concatenating and splitting along sequence axes keep
/// dimensions linear; equality is structural, which is what shape checking needs.
/// </summary>
public sealed class SymbolicDim : IEquatable<SymbolicDim>
{
    private readonly SortedDictionary<string, long> _terms;

    private SymbolicDim(long constant, SortedDictionary<string, long> terms)
    {
        Constant = constant;
        _terms = terms;
    }

    public long Constant { get; }
    public IReadOnlyDictionary<string, long> Terms => _terms;
    public bool IsConstant => _terms.Count == 0;

    public static SymbolicDim Of(long constant) => new(constant, new SortedDictionary<string, long>(StringComparer.Ordinal));

    public static SymbolicDim Symbol(string name)
    {
        var terms = new SortedDictionary<string, long>(StringComparer.Ordinal) { [name] = 1 };
        return new SymbolicDim(0, terms);
    }

    public static SymbolicDim operator +(SymbolicDim a, SymbolicDim b) => Combine(a, b, 1);
    public static SymbolicDim operator -(SymbolicDim a, SymbolicDim b) => Combine(a, b, -1);

    public SymbolicDim Times(long factor)
    {
        var terms = new SortedDictionary<string, long>(StringComparer.Ordinal);
        if (factor != 0)
            foreach (var t in _terms) terms[t.Key] = t.Value * factor;
        return new SymbolicDim(Constant * factor, terms);
    }

    /// <summary>
    /// ⌊this / divisor⌋ for every value of the runtime sizes, which is linear only when each size's coefficient
    /// divides exactly (⌊(8h − 1)/2⌋ = 4h − 1); null otherwise.
    /// </summary>
    public SymbolicDim? FloorDivide(long divisor)
    {
        if (divisor <= 0 || _terms.Values.Any(c => c % divisor != 0)) return null;
        var terms = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var t in _terms) terms[t.Key] = t.Value / divisor;
        long constant = Constant >= 0 ? Constant / divisor : -((-Constant + divisor - 1) / divisor);
        return new SymbolicDim(constant, terms);
    }

    private static SymbolicDim Combine(SymbolicDim a, SymbolicDim b, long sign)
    {
        var terms = new SortedDictionary<string, long>(a._terms, StringComparer.Ordinal);
        foreach (var t in b._terms)
        {
            terms.TryGetValue(t.Key, out long existing);
            long sum = existing + sign * t.Value;
            if (sum == 0) terms.Remove(t.Key); else terms[t.Key] = sum;
        }
        return new SymbolicDim(a.Constant + sign * b.Constant, terms);
    }

    public bool Equals(SymbolicDim? other) =>
        other is not null && Constant == other.Constant && _terms.Count == other._terms.Count &&
        _terms.All(t => other._terms.TryGetValue(t.Key, out long v) && v == t.Value);

    public override bool Equals(object? obj) => Equals(obj as SymbolicDim);

    public override int GetHashCode()
    {
        unchecked
        {
            int h = Constant.GetHashCode();
            foreach (var t in _terms) h = h * 31 + t.Key.GetHashCode() * 7 + t.Value.GetHashCode();
            return h;
        }
    }

    /// <summary>As the schema writes it: "Lt + Li", "3", "2 * Li + 1".</summary>
    public override string ToString() => Format(name => name);

    /// <summary>As C#: runtime symbols become local variable names.</summary>
    public string ToCSharp() => Format(name => name);

    private string Format(Func<string, string> symbol)
    {
        var sb = new StringBuilder();
        foreach (var t in _terms)
        {
            if (sb.Length > 0) sb.Append(t.Value < 0 ? " - " : " + ");
            else if (t.Value < 0) sb.Append('-');
            long magnitude = Math.Abs(t.Value);
            if (magnitude != 1) sb.Append(magnitude).Append(" * ");
            sb.Append(symbol(t.Key));
        }
        if (Constant != 0 || sb.Length == 0)
        {
            if (sb.Length > 0) sb.Append(Constant < 0 ? " - " : " + ").Append(Math.Abs(Constant));
            else sb.Append(Constant);
        }
        return sb.ToString();
    }
}
