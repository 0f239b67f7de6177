using System.Text;
using System.Text.Json;
using InFluxEdit.Text;
using InFluxEdit.Runtime.Text;
using Shouldly;

namespace InFluxEdit.Tests.Text;

/// <summary>
/// Prompts that Hugging Face's tokenizers treat specially, against ids derived here from HF's published algorithm:
/// the words CLIPTokenizer (no ftfy: BasicTokenizer cleanup, Python's str.lower, special tokens split out first) makes
/// of each prompt are written out below, and spelled into ids byte by byte through the toy vocabulary, which has no
/// merges; T5's pieces are written out the same way (special tokens split out, each stretch with its dummy prefix).
/// </summary>
public sealed class HuggingFacePromptTests
{
    private const string Eos = "<|endoftext|>", Bos = "<|startoftext|>";

    public static TheoryData<string, string, string[]> ClipPrompts() => new()
    {
        { "a literal end token is one token, even after punctuation", "!!<|endoftext|>dog", ["!!", Eos, "dog"] },
        { "a start token too", "<|startoftext|>cat", [Bos, "cat"] },
        { "an upper-case end token is lowered, then still one token", "a photo <|ENDOFTEXT|>", ["a", "photo", Eos] },
        { "CJK ideographs stand apart", "東京tower", ["東", "京", "tower"] },
        { "format and control characters are dropped", "zero\u200Bwidth\u00ADsoft\u0007bell\uFEFF", ["zerowidthsoftbell"] },
        { "NUL and U+FFFD are dropped", "x\uFFFDy\0z", ["xyz"] },
        { "tabs, no-break spaces, line separators split words", "tab\tnbsp\u00A0line\u2028end\u3000wide", ["tab", "nbsp", "line", "end", "wide"] },
        { "Python lowers İ to i + combining dot (a mark, so not part of the letter run)", "İstanbul", ["i", "\u0307", "stanbul"] },
        { "Python's final sigma", "ΟΔΟΣ ΣΑΣ.", ["οδος", "σας", "."] },
        { "a letter outside the BMP is a letter", "𝐀bc 𐐀x", ["𝐀bc", "𐐨x"] },
        { "NFC joins a decomposed accent", "nai\u0308ve", ["naïve"] },
        { "contractions stay split", "it's they'LL", ["it", "'s", "they", "'ll"] },
    };

    [Theory]
    [MemberData(nameof(ClipPrompts))]
    public void Clip_tokenizes_as_hugging_face(string label, string prompt, string[] hfWords)
    {
        using var dir = new TempDir();
        ToyTokenizers.WriteClip(dir.Path);
        var tokenizer = ClipTokenizer.Load(dir.File("vocab.json"), dir.File("merges.txt"));
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(dir.File("vocab.json")))!;
        var expected = hfWords.SelectMany(word => word is Eos or Bos ? [vocab[word]] : SpellBytes(word, vocab)).ToList();
        tokenizer.Tokenize(prompt).ShouldBe(expected, label);
    }

    /// <summary>A word with no merges: each UTF-8 byte's GPT-2 symbol, the last one as a word end.</summary>
    private static IEnumerable<int> SpellBytes(string word, Dictionary<string, int> vocab)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        for (int i = 0; i < bytes.Length; i++)
            yield return vocab[Gpt2Symbol(bytes[i]) + (i == bytes.Length - 1 ? "</w>" : "")];
    }

    /// <summary>GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest are 256 + n in byte order.</summary>
    private static string Gpt2Symbol(byte value)
    {
        static bool Printable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        if (Printable(value)) return ((char)value).ToString();
        int n = Enumerable.Range(0, value).Count(b => !Printable(b));
        return ((char)(256 + n)).ToString();
    }

    [Fact]
    public void Clip_keeps_the_golden_vocabulary_exact_on_these_prompts_too()
    {
        // With real merges the special-token split still holds: the pieces around a literal EOS tokenize on their own.
        var tokenizer = ClipTokenizer.Load(TestPaths.Golden("tokenizers/clip/vocab.json"), TestPaths.Golden("tokenizers/clip/merges.txt"));
        var expected = tokenizer.Tokenize("a red car!!").Append(tokenizer.EosId).Concat(tokenizer.Tokenize("parked")).ToList();
        tokenizer.Tokenize("a red car!!<|endoftext|>parked").ShouldBe(expected);
        tokenizer.Tokenize("東京").ShouldBe(tokenizer.Tokenize("東 京"));
    }

    public static TheoryData<string, string, string[]> T5Prompts() => new()
    {
        { "</s> inside a prompt", "red</s>ok", ["\u2581red", "</s>", "\u2581", "o", "k"] },
        { "pad and unk spelled out", "<pad> <unk>red", ["<pad>", "<unk>", "\u2581red"] },
        { "a sentinel between words", "red <extra_id_0> red", ["\u2581red", "<extra_id_0>", "\u2581red"] },
        { "the longest sentinel wins", "<extra_id_10>", ["<extra_id_10>"] },
        { "past the 100 sentinels it is text", "<extra_id_100>", ["\u2581", "<", "e", "x", "t", "r", "a", "_", "i", "d", "_", "1", "0", "0", ">"] },
        { "special tokens are case-sensitive", "</S>", ["\u2581", "<", "/", "S", ">"] },
    };

    [Theory]
    [MemberData(nameof(T5Prompts))]
    public void T5_tokenizes_as_hugging_face(string label, string prompt, string[] hfPieces)
    {
        using var dir = new TempDir();
        ToyTokenizers.WriteSentencePiece(dir.File("spiece.model"), ["red"]);
        var tokenizer = SentencePieceTokenizer.Load(dir.File("spiece.model"));
        int pieces = tokenizer.VocabularySize;
        // T5Tokenizer: <extra_id_N> is vocab_size − 1 − N, where vocab_size counts the model's pieces and 100 sentinels.
        var expected = hfPieces.Select(piece => piece.StartsWith("<extra_id_", StringComparison.Ordinal)
            ? pieces + 100 - 1 - int.Parse(piece["<extra_id_".Length..^1])
            : Enumerable.Range(0, pieces).Single(id => tokenizer.PieceOf(id) == piece)).ToList();
        tokenizer.Tokenize(prompt).ShouldBe(expected, label);
    }

    [Fact]
    public void Python_lower_differs_from_the_invariant_culture_where_hugging_face_sees_it()
    {
        PythonCase.Lower("İ").ShouldBe("i\u0307");
        PythonCase.Lower("ΣΑΣ").ShouldBe("σας");
        PythonCase.Lower("Σ").ShouldBe("σ");                 // no cased letter before: not final
        PythonCase.Lower("AΣ'").ShouldBe("aς'");             // case-ignorable after: still final
        PythonCase.Lower("AΣ'B").ShouldBe("aσ'b");           // a cased letter after the ignorable: not final
        PythonCase.Lower("ÀÉÎ Ǆ").ShouldBe("àéî ǆ");
    }
}
