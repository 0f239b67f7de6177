using InFluxEdit.Parity;
using InFluxEdit.Text;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Text;
using Shouldly;

namespace InFluxEdit.Tests.Text;

/// <summary>
/// CLIP BPE and T5 SentencePiece against the golden ids (every prompt, exact), then edge cases checked by their
/// properties (BOS/EOS placement, padding, length, truncation), never by ids made up here.
/// </summary>
public class TokenizerTests
{
    private static readonly Lazy<ClipTokenizer> Clip = new(() => ClipTokenizer.Load(
        TestPaths.Golden("tokenizers/clip/vocab.json"), TestPaths.Golden("tokenizers/clip/merges.txt")));
    private static readonly Lazy<SentencePieceTokenizer> T5 = new(() => SentencePieceTokenizer.Load(TestPaths.Golden("spm-tiny.model")));

    private const int ClipBos = 49406, ClipEos = 49407;
    private const int T5Pad = 0, T5Eos = 1, T5Unk = 2;

    public static TheoryData<string, string> Edges() => new()
    {
        { "empty", "" },
        { "only spaces", "   \t  \n " },
        { "punctuation", "Hello, world!!! (really?) -- yes; no... ok." },
        { "digits", "0123456789 3.14 1e-5 2024" },
        { "non-ASCII", "naïve façade — 東京 🚀 Ωmega" },
        { "apostrophes", "it's what they've said, I'd say" },
    };

    [Theory]
    [InlineData("clip-tokenizer-tiny")]
    [InlineData("spm-tokenizer-tiny")]
    public void EveryGoldenPromptGivesTheReferenceIds(string caseName)
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find(caseName)!, outDir: null);

        var row = rows.ShouldHaveSingleItem();
        row.Tensor.ShouldBe("input_ids");
        row.Tolerance.ShouldBe(0);
        row.Status.ShouldBe(ParityStatus.Passed, row.Note);
        row.Error.ShouldBe(0);
    }

    [Fact]
    public void AWrongIdIsReportedAsAFailureNotRoundedAway()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        // The CLIP case's prompts against the T5 ids: same prompts, different tokenizer, so ids differ.
        var clipCase = manifest.Find("clip-tokenizer-tiny")!;
        using var json = System.Text.Json.JsonDocument.Parse(clipCase.Json.GetRawText()
            .Replace("\"clip-tokenizer-tiny.safetensors\"", "\"spm-tokenizer-tiny.safetensors\""));
        var rows = new ParityRunner(manifest, backend).Run(new GoldenCase("mismatch", json.RootElement.Clone()), outDir: null);
        rows.ShouldHaveSingleItem().Status.ShouldBe(ParityStatus.Failed);
    }

    [Theory]
    [MemberData(nameof(Edges))]
    public void ClipIdsAreBosTokensEosThenEosPadding(string label, string prompt)
    {
        var ids = Clip.Value.Encode(prompt);
        var tokens = Clip.Value.Tokenize(prompt);

        ids.Length.ShouldBe(77, label);
        ids[0].ShouldBe(ClipBos);
        ids.Skip(1).Take(tokens.Count).ShouldBe(tokens);
        ids.Skip(1 + tokens.Count).ShouldAllBe(id => id == ClipEos);
        tokens.ShouldAllBe(id => id >= 0 && id < ClipBos);
        (tokens.Count == 0).ShouldBe(string.IsNullOrWhiteSpace(prompt), label);
    }

    [Fact]
    public void ClipIgnoresCaseAndExtraWhitespace()
    {
        Clip.Value.Encode("  A  Photo\tOF\n a CAT ").ShouldBe(Clip.Value.Encode("a photo of a cat"));
    }

    [Fact]
    public void ClipSplitsDigitsOneByOne()
    {
        Clip.Value.Tokenize("2024").Count.ShouldBe(4);
        Clip.Value.Tokenize("2024").ShouldBe(Clip.Value.Tokenize("2 0 2 4"));
    }

    [Fact]
    public void ClipTruncatesLongPromptsKeepingEosLast()
    {
        string prompt = string.Join(" ", Enumerable.Range(0, 200).Select(i => i % 2 == 0 ? "word" : "cat"));
        var tokens = Clip.Value.Tokenize(prompt);
        tokens.Count.ShouldBeGreaterThan(75);

        var ids = Clip.Value.Encode(prompt);
        ids.Length.ShouldBe(77);
        ids[0].ShouldBe(ClipBos);
        ids[76].ShouldBe(ClipEos);
        ids.Skip(1).Take(75).ShouldBe(tokens.Take(75));
        ids.Take(76).ShouldNotContain(ClipEos);
    }

    [Fact]
    public void ClipHonoursOtherLengths()
    {
        var ids = Clip.Value.Encode("a photo of a cat", maxLength: 4);
        ids.Length.ShouldBe(4);
        ids[0].ShouldBe(ClipBos);
        ids[3].ShouldBe(ClipEos);
        Should.Throw<ArgumentOutOfRangeException>(() => Clip.Value.Encode("x", maxLength: 1));
    }

    [Theory]
    [MemberData(nameof(Edges))]
    public void T5IdsArePiecesEosThenPadding(string label, string prompt)
    {
        const int length = 64;
        var ids = T5.Value.Encode(prompt, length);
        var tokens = T5.Value.Tokenize(prompt);

        ids.Length.ShouldBe(length, label);
        tokens.Count.ShouldBeLessThan(length, label);
        ids.Take(tokens.Count).ShouldBe(tokens);
        ids[tokens.Count].ShouldBe(T5Eos);
        ids.Skip(tokens.Count + 1).ShouldAllBe(id => id == T5Pad);
        tokens.ShouldNotContain(T5Eos);
        tokens.ShouldNotContain(T5Pad);
        (tokens.Count == 0).ShouldBe(string.IsNullOrWhiteSpace(prompt), label);
    }

    [Fact]
    public void T5NormalisesWhitespaceAsTheModelSays()
    {
        T5.Value.Normalizer.Name.ShouldBe("nmt_nfkc");
        T5.Value.Normalize("  a   b\tc\n ").ShouldBe("▁a▁b▁c");
        T5.Value.Normalize("").ShouldBe("");
        T5.Value.Normalize(" \t\n ").ShouldBe("");
        T5.Value.Encode("  multiple   spaces ", 16).ShouldBe(T5.Value.Encode("multiple spaces", 16));
    }

    [Fact]
    public void T5AppliesNfkc()
    {
        // Full-width letters and the "ﬁ" ligature fold to ASCII under NFKC.
        T5.Value.Normalize("ＡＢＣ ﬁne").ShouldBe("▁ABC▁fine");
    }

    [Fact]
    public void T5PiecesSpellTheNormalisedTextAndUnknownRunsAreOneUnk()
    {
        string prompt = "Café 東京 ok";
        var tokens = T5.Value.Tokenize(prompt);
        string normalized = T5.Value.Normalize(prompt);
        // Every known piece appears in order in the normalised text; characters outside the tiny vocabulary are <unk>.
        string spelled = string.Concat(tokens.Select(id => id == T5Unk ? "?" : T5.Value.PieceOf(id)));
        spelled.Replace("?", "").Length.ShouldBeLessThanOrEqualTo(normalized.Length);
        for (int i = 1; i < tokens.Count; i++)
            (tokens[i] == T5Unk && tokens[i - 1] == T5Unk).ShouldBeFalse("consecutive unknowns merge into one");
    }

    [Fact]
    public void T5TruncatesToLengthMinusOneThenEos()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("word", 100));
        var tokens = T5.Value.Tokenize(prompt);
        tokens.Count.ShouldBeGreaterThan(30);

        var ids = T5.Value.Encode(prompt, 24);
        ids.Length.ShouldBe(24);
        ids.Take(23).ShouldBe(tokens.Take(23));
        ids[23].ShouldBe(T5Eos);
        T5.Value.Encode(prompt, 1).ShouldBe(new[] { T5Eos });
    }

    [Fact]
    public void T5ReadsTheSpecialIdsFromTheModel()
    {
        T5.Value.PadId.ShouldBe(T5Pad);
        T5.Value.EosId.ShouldBe(T5Eos);
        T5.Value.UnknownId.ShouldBe(T5Unk);
        T5.Value.PieceOf(T5Eos).ShouldBe("</s>");
    }
}

public sealed class ToyTokenizerTests
{
    [Fact]
    public void The_toy_clip_vocabulary_spells_every_text_byte_by_byte()
    {
        using var dir = new TempDir();
        ToyTokenizers.WriteClip(dir.Path);
        var tokenizer = ClipTokenizer.Load(dir.File("vocab.json"), dir.File("merges.txt"));
        tokenizer.VocabularySize.ShouldBe(514);
        var ids = tokenizer.Encode("Red  circle!", 16);
        // BOS, r e d</w>, c i r c l e !</w>, then EOS padding: 1 + 3 + 7 = 11 tokens before the pads.
        ids[0].ShouldBe(tokenizer.BosId);
        ids[11].ShouldBe(tokenizer.EosId);
        ids[10].ShouldNotBe(tokenizer.EosId);
        tokenizer.Encode("red circle!", 16).ShouldBe(ids);
    }

    [Fact]
    public void The_toy_sentencepiece_model_reads_back_as_characters_with_t5_ids()
    {
        using var dir = new TempDir();
        string path = dir.File("spiece.model");
        ToyTokenizers.WriteSentencePiece(path);
        var tokenizer = SentencePieceTokenizer.Load(path);
        tokenizer.VocabularySize.ShouldBe(98);
        (tokenizer.PadId, tokenizer.EosId, tokenizer.UnknownId).ShouldBe((0, 1, 2));
        var ids = tokenizer.Encode("red ok", 10);
        string spelled = string.Concat(ids.TakeWhile(id => id != tokenizer.EosId).Select(tokenizer.PieceOf));
        spelled.ShouldBe("\u2581red\u2581ok");
        ids[8].ShouldBe(0);
        tokenizer.Encode("é", 4)[1].ShouldBe(tokenizer.UnknownId);
    }

    [Fact]
    public void Whole_words_of_the_toy_sentencepiece_model_win_over_their_characters()
    {
        using var dir = new TempDir();
        string path = dir.File("spiece.model");
        ToyTokenizers.WriteSentencePiece(path, ["red", "circle", "with"]);
        var tokenizer = SentencePieceTokenizer.Load(path);
        tokenizer.VocabularySize.ShouldBe(101);
        var pieces = tokenizer.Encode("red circle with reds", 12).TakeWhile(id => id != tokenizer.EosId).Select(tokenizer.PieceOf).ToList();
        // "reds" is no word of the model: it falls back to the word "red" and a character.
        pieces.ShouldBe(["\u2581red", "\u2581circle", "\u2581with", "\u2581red", "s"]);
        Should.Throw<ArgumentException>(() => ToyTokenizers.WriteSentencePiece(dir.File("bad.model"), ["two words"]));
    }
}
