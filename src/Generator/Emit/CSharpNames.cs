using System.Globalization;
using System.Linq;
using System.Text;

namespace InFluxEdit.Generator.Emit;

internal static class CSharpNames
{
    private static readonly string[] Keywords =
    {
        "abstract", "as", "base", "bool", "break", "byte", "case", "catch", "char", "checked", "class", "const", "continue",
        "decimal", "default", "delegate", "do", "double", "else", "enum", "event", "explicit", "extern", "false", "finally",
        "fixed", "float", "for", "foreach", "goto", "if", "implicit", "in", "int", "interface", "internal", "is", "lock",
        "long", "namespace", "new", "null", "object", "operator", "out", "override", "params", "private", "protected",
        "public", "readonly", "ref", "return", "sbyte", "sealed", "short", "sizeof", "stackalloc", "static", "string",
        "struct", "switch", "this", "throw", "true", "try", "typeof", "uint", "ulong", "unchecked", "unsafe", "ushort",
        "using", "virtual", "void", "volatile", "while",
    };

    /// <summary>"img_attn.qkv.weight" → "imgAttnQkvWeight"; keywords get an @.</summary>
    public static string Camel(string name)
    {
        string pascal = Pascal(name);
        string camel = pascal.Length == 0 ? "_" : char.ToLowerInvariant(pascal[0]) + pascal.Substring(1);
        return Keywords.Contains(camel) ? "@" + camel : camel;
    }

    public static string Pascal(string name)
    {
        var sb = new StringBuilder();
        bool upper = true;
        foreach (char c in name)
        {
            if (!char.IsLetterOrDigit(c)) { upper = true; continue; }
            sb.Append(upper ? char.ToUpperInvariant(c) : c);
            upper = false;
        }
        if (sb.Length > 0 && char.IsDigit(sb[0])) sb.Insert(0, '_');
        return sb.ToString();
    }

    public static string Literal(string text) =>
        "\"" + text.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    public static string Float(double value)
    {
        string s = ((float)value).ToString("R", CultureInfo.InvariantCulture);
        return s + "f";
    }
}
