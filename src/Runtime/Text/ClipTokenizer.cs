using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace InFluxEdit.Runtime.Text;

/// <summary>
/// The CLIP byte-level BPE tokenizer (openai/clip-vit-large-patch14, Hugging Face vocab.json + merges.txt layout):
/// NFC, lower case, whitespace collapsed and stripped, the CLIP pre-tokenisation regex, bytes mapped to the
/// GPT-2 printable alphabet, "&lt;/w&gt;" on each word's last symbol, then merges by rank.
/// Encode gives BOS 49406, the tokens, EOS 49407, padded with EOS to the length; longer prompts are cut so that
/// EOS stays last (Hugging Face <c>padding="max_length", truncation=True</c>).
/// ftfy and HTML unescaping (openai's basic_clean) are not applied; Hugging Face's CLIPTokenizer without ftfy skips them too.
/// </summary>
public sealed class ClipTokenizer
{
    public const int DefaultMaxLength = 77;
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";
    private const string WordEnd = "</w>";

    private static readonly Regex Pattern = new(
        @"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.Compiled);
    private static readonly Regex Whitespace = new(@"\s+", RegexOptions.Compiled);
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
        foreach (Match match in Pattern.Matches(Clean(text)))
        {
            if (!_cache.TryGetValue(match.Value, out var wordIds))
            {
                var encoded = new StringBuilder();
                foreach (byte b in Encoding.UTF8.GetBytes(match.Value))
                    encoded.Append(ByteToUnicode[b]);
                wordIds = Bpe(encoded.ToString()).Select(Id).ToArray();
                _cache[match.Value] = wordIds;
            }
            ids.AddRange(wordIds);
        }
        return ids;
    }

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

    /// <summary>NFC, whitespace runs to one space, stripped, lower case (what Hugging Face's CLIP normaliser does).</summary>
    public static string Clean(string text) =>
        Whitespace.Replace(text.Normalize(NormalizationForm.FormC), " ").Trim().ToLowerInvariant();

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
