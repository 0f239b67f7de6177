using System.Globalization;
using System.Text;
using System.Text.Json;

namespace InFluxEdit.Runtime.Text;

/// <summary>
/// The CLIP byte-level BPE tokenizer (openai/clip-vit-large-patch14, Hugging Face vocab.json + merges.txt layout), as
/// Hugging Face's CLIPTokenizer runs it without ftfy: a literal "&lt;|startoftext|&gt;" or "&lt;|endoftext|&gt;" in the
/// prompt is its special token; the rest is cleaned as BasicTokenizer does (NUL, U+FFFD and control/format characters
/// dropped, whitespace to spaces, spaces around CJK ideographs, NFC, split on whitespace, Python's lower case), split
/// by the CLIP pre-tokenisation pattern, bytes mapped to the GPT-2 printable alphabet, "&lt;/w&gt;" on each word's
/// last symbol, then merged by rank.
/// Encode gives BOS 49406, the tokens, EOS 49407, padded with EOS to the length; longer prompts are cut so that
/// EOS stays last (Hugging Face <c>padding="max_length", truncation=True</c>).
/// </summary>
public sealed class ClipTokenizer
{
    public const int DefaultMaxLength = 77;
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";
    private const string WordEnd = "</w>";

    private static readonly string[] SpecialTokens = { StartOfText, EndOfText };
    private static readonly string[] Contractions = { "'s", "'t", "'re", "'ve", "'m", "'ll", "'d" };
    private static readonly string[] ByteToUnicode = BuildByteToUnicode();

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly Dictionary<string, int[]> _cache = new();

    public ClipTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string Left, string Right)> merges)
    {
        _vocab = new Dictionary<string, int>(vocab);
        _ranks = new Dictionary<(string, string), int>();
        int rank = 0;
        foreach (var merge in merges)
            _ranks.TryAdd(merge, rank++);
        BosId = Id(StartOfText);
        EosId = Id(EndOfText);
    }

    public int BosId { get; }
    public int EosId { get; }
    public int VocabularySize => _vocab.Count;

    /// <summary>Loads vocab.json (token → id) and merges.txt ("#version" line, then "left right" per line).</summary>
    public static ClipTokenizer Load(string vocabPath, string mergesPath)
    {
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                ?? throw new InvalidDataException($"{vocabPath} is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{vocabPath} is not a token → id JSON object: {e.Message}");
        }
        var merges = new List<(string, string)>();
        int lineNumber = 0;
        foreach (string raw in File.ReadLines(mergesPath))
        {
            lineNumber++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            var parts = line.Split(' ');
            if (parts.Length != 2)
                throw new InvalidDataException($"{mergesPath}:{lineNumber} is not \"left right\": '{line}'");
            merges.Add((parts[0], parts[1]));
        }
        return new ClipTokenizer(vocab, merges);
    }

    /// <summary>The BPE ids of the text, without BOS, EOS or padding.</summary>
    public List<int> Tokenize(string text)
    {
        var ids = new List<int>();
        // Hugging Face splits the raw prompt on its added tokens first (case-sensitive), then tokenizes each piece.
        int start = 0;
        while (start <= text.Length)
        {
            var (at, special) = NextSpecialToken(text, start);
            foreach (string word in PreTokenize(Clean(text[start..at])))
                ids.AddRange(WordIds(word));
            if (special == null) break;
            ids.Add(Id(special));
            start = at + special.Length;
        }
        return ids;
    }

    private int[] WordIds(string word)
    {
        if (_cache.TryGetValue(word, out var wordIds)) return wordIds;
        // A special token's text that reaches BPE (as "<|ENDOFTEXT|>" does, lowered) is still the one token: the
        // reference BPE's cache starts out holding both.
        if (Array.IndexOf(SpecialTokens, word) >= 0)
            wordIds = new[] { Id(word) };
        else
        {
            var encoded = new StringBuilder();
            foreach (byte b in Encoding.UTF8.GetBytes(word))
                encoded.Append(ByteToUnicode[b]);
            wordIds = Bpe(encoded.ToString()).Select(Id).ToArray();
        }
        _cache[word] = wordIds;
        return wordIds;
    }

    private static (int At, string? Token) NextSpecialToken(string text, int start)
    {
        int best = text.Length;
        string? token = null;
        foreach (string special in SpecialTokens)
        {
            int at = text.IndexOf(special, start, StringComparison.Ordinal);
            if (at >= 0 && at < best) (best, token) = (at, special);
        }
        return (best, token);
    }

    /// <summary>
    /// The CLIP pattern <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
    /// (case-insensitive) over code points, as Python's regex module matches it: .NET's Regex sees UTF-16 units, so a
    /// letter outside the BMP (𝐀, 𐐀) would fall into the punctuation class there.
    /// </summary>
    private static IEnumerable<string> PreTokenize(string text)
    {
        int i = 0;
        while (i < text.Length)
        {
            var rune = Rune.GetRuneAt(text, i);
            if (Rune.IsWhiteSpace(rune))
            {
                i += rune.Utf16SequenceLength;
                continue;
            }
            int end = MatchLiteral(text, i, SpecialTokens) ?? MatchLiteral(text, i, Contractions) ?? -1;
            if (end < 0)
            {
                var kind = KindOf(rune);
                end = i + rune.Utf16SequenceLength;
                if (kind != CharacterKind.Number)
                    while (end < text.Length && KindOf(Rune.GetRuneAt(text, end)) == kind)
                        end += Rune.GetRuneAt(text, end).Utf16SequenceLength;
            }
            yield return text[i..end];
            i = end;
        }
    }

    private enum CharacterKind { Letter, Number, Other, Space }

    private static CharacterKind KindOf(Rune rune)
    {
        if (Rune.IsWhiteSpace(rune)) return CharacterKind.Space;
        if (Rune.IsLetter(rune)) return CharacterKind.Letter;
        return Rune.IsNumber(rune) ? CharacterKind.Number : CharacterKind.Other;
    }

    /// <summary>The end of the first literal that starts at <paramref name="start"/>, compared as IGNORECASE does.</summary>
    private static int? MatchLiteral(string text, int start, string[] literals)
    {
        foreach (string literal in literals)
        {
            if (start + literal.Length > text.Length) continue;
            int k = 0;
            while (k < literal.Length && FoldsTo(text[start + k], literal[k])) k++;
            if (k == literal.Length) return start + literal.Length;
        }
        return null;
    }

    /// <summary>Simple case folding onto a lower-case ASCII literal character: long s 'ſ' folds to 's'.</summary>
    private static bool FoldsTo(char c, char literal) =>
        c == literal || char.ToLowerInvariant(c) == literal || (literal == 's' && c == '\u017F');

    /// <summary>BOS, the tokens, EOS, padded with EOS to <paramref name="maxLength"/>; cut to keep EOS last.</summary>
    public int[] Encode(string text, int maxLength = DefaultMaxLength)
    {
        if (maxLength < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "room for BOS and EOS is needed");
        var tokens = Tokenize(text);
        var ids = new int[maxLength];
        Array.Fill(ids, EosId);
        ids[0] = BosId;
        int count = Math.Min(tokens.Count, maxLength - 2);
        tokens.CopyTo(0, ids, 1, count);
        return ids;
    }

    /// <summary>
    /// Hugging Face's BasicTokenizer(strip_accents=False, do_split_on_punc=False), which CLIPTokenizer uses when ftfy is
    /// absent: NUL, U+FFFD and control or format characters (category C*, except tab and line breaks) dropped, other
    /// whitespace to a space, CJK ideographs set apart by spaces, NFC, then Python's lower case; words joined by one space.
    /// </summary>
    public static string Clean(string text)
    {
        var cleaned = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            int code = rune.Value;
            if (code is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(rune) == UnicodeCategory.SpaceSeparator)
                cleaned.Append(' ');
            else if (code is 0 or 0xFFFD || IsControl(rune))
                continue;
            else if (IsCjkIdeograph(code))
                cleaned.Append(' ').Append(rune.ToString()).Append(' ');
            else
                cleaned.Append(rune.ToString());
        }
        // Python's str.split() also splits on the line and paragraph separators, which the loop above keeps.
        var words = cleaned.ToString().Normalize(NormalizationForm.FormC)
            .Split(new[] { ' ', '\u2028', '\u2029' }, StringSplitOptions.RemoveEmptyEntries);
        return PythonCase.Lower(string.Join(' ', words));
    }

    private static bool IsControl(Rune rune) => Rune.GetUnicodeCategory(rune) is UnicodeCategory.Control
        or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;

    /// <summary>The CJK Unified and Compatibility Ideograph blocks BasicTokenizer's _is_chinese_char lists.</summary>
    private static bool IsCjkIdeograph(int code) =>
        code is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF)
            or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B820 and <= 0x2CEAF)
            or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);

    private int Id(string token) =>
        _vocab.TryGetValue(token, out int id) ? id : throw new InvalidDataException($"token '{token}' is not in the CLIP vocabulary");

    private IEnumerable<string> Bpe(string token)
    {
        // Symbols are whole characters (the byte alphabet is all BMP), the last one carrying the word-end mark.
        var word = new List<string>(token.Length);
        for (int i = 0; i < token.Length; i++)
            word.Add(i == token.Length - 1 ? token[i] + WordEnd : token[i].ToString());
        while (word.Count > 1)
        {
            int bestRank = int.MaxValue;
            (string, string) best = default;
            for (int i = 0; i + 1 < word.Count; i++)
            {
                if (_ranks.TryGetValue((word[i], word[i + 1]), out int rank) && rank < bestRank)
                {
                    bestRank = rank;
                    best = (word[i], word[i + 1]);
                }
            }
            if (bestRank == int.MaxValue) break;
            // Merge every non-overlapping occurrence of the pair, left to right, as the reference does.
            var merged = new List<string>(word.Count);
            for (int i = 0; i < word.Count; i++)
            {
                if (i + 1 < word.Count && word[i] == best.Item1 && word[i + 1] == best.Item2)
                {
                    merged.Add(best.Item1 + best.Item2);
                    i++;
                }
                else
                {
                    merged.Add(word[i]);
                }
            }
            word = merged;
        }
        return word;
    }

    /// <summary>GPT-2's reversible byte → printable character table.</summary>
    private static string[] BuildByteToUnicode()
    {
        var table = new string[256];
        bool Printable(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int next = 0;
        for (int b = 0; b < 256; b++)
            table[b] = Printable(b) ? ((char)b).ToString() : ((char)(256 + next++)).ToString();
        return table;
    }
}
