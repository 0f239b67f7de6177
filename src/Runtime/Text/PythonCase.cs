using System.Globalization;
using System.Text;

namespace InFluxEdit.Runtime.Text;

/// <summary>
/// Python's <c>str.lower()</c>, which Hugging Face's tokenizers apply and .NET's ToLowerInvariant does not match on two
/// points: full case mappings (U+0130 'İ' becomes "i" + U+0307 combining dot, not a bare 'i') and the Final_Sigma
/// context (Σ at the end of a word becomes 'ς', not 'σ'). Every other code point takes its simple lowercase mapping.
/// </summary>
public static class PythonCase
{
    private const int CapitalSigma = 0x03A3, SmallSigma = 0x03C3, FinalSigma = 0x03C2, CapitalIWithDot = 0x0130;

    public static string Lower(string text)
    {
        var runes = text.EnumerateRunes().ToArray();
        var output = new StringBuilder(text.Length);
        for (int i = 0; i < runes.Length; i++)
        {
            int code = runes[i].Value;
            if (code == CapitalIWithDot) output.Append("i\u0307");
            else if (code == CapitalSigma) output.Append((char)(IsFinalSigma(runes, i) ? FinalSigma : SmallSigma));
            else output.Append(Rune.ToLowerInvariant(runes[i]).ToString());
        }
        return output.ToString();
    }

    /// <summary>Unicode's Final_Sigma: a cased letter before (case-ignorables between), and none after.</summary>
    private static bool IsFinalSigma(Rune[] runes, int index)
    {
        int before = index - 1;
        while (before >= 0 && IsCaseIgnorable(runes[before])) before--;
        if (before < 0 || !IsCased(runes[before])) return false;
        int after = index + 1;
        while (after < runes.Length && IsCaseIgnorable(runes[after])) after++;
        return after == runes.Length || !IsCased(runes[after]);
    }

    /// <summary>
    /// Unicode's Cased property: upper, lower and title case letters, and the other letters, numerals and symbols that
    /// have a case partner (ⅰ/Ⅰ, ⓐ/Ⓐ, U+0345) or are lowercase modifiers (ª, º, ʰ…, ᴬ…, ⁱ, ⁿ, ₐ…).
    /// </summary>
    private static bool IsCased(Rune rune)
    {
        var category = Rune.GetUnicodeCategory(rune);
        if (category is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter)
            return true;
        if (Rune.ToLowerInvariant(rune) != rune || Rune.ToUpperInvariant(rune) != rune) return true;
        int c = rune.Value;
        return c is 0x00AA or 0x00BA or (>= 0x02B0 and <= 0x02B8) or 0x02C0 or 0x02C1 or (>= 0x02E0 and <= 0x02E4) or 0x037A
            or (>= 0x1D2C and <= 0x1D6A) or 0x1D78 or (>= 0x1D9B and <= 0x1DBF) or 0x2071 or 0x207F or (>= 0x2090 and <= 0x209C)
            or 0x2C7C or 0x2C7D or 0xA69C or 0xA69D or 0xA770 or 0xA7F8 or 0xA7F9 or (>= 0xAB5C and <= 0xAB5F);
    }

    /// <summary>Unicode's Case_Ignorable: marks, format characters, modifiers, and the word-internal punctuation . : ' ’ ·.</summary>
    private static bool IsCaseIgnorable(Rune rune)
    {
        var category = Rune.GetUnicodeCategory(rune);
        if (category is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol)
            return true;
        return rune.Value is '\'' or '.' or ':' or 0x00B7 or 0x0387 or 0x055F or 0x05F4 or 0x2018 or 0x2019 or 0x2024 or 0x2027
            or 0xFE13 or 0xFE52 or 0xFE55 or 0xFF07 or 0xFF0E or 0xFF1A;
    }
}
