using System.Text;
using System.Text.Json;

namespace InFluxEdit.Text;

/// <summary>
/// Tokenizer files for small text encoders made by this project, in the formats the real ones use, so the same
/// loaders read them: a byte-level CLIP vocabulary without merges (one token per byte, 514 tokens) and a SentencePiece
/// unigram model of characters (one piece per printable ASCII character and the word boundary, 98 pieces) plus whole
/// words, as the real T5 vocabulary has them.
/// </summary>
public static class ToyTokenizers
{
    /// <summary>Writes vocab.json and merges.txt: GPT-2's byte-to-unicode symbols, each alone and as a word end, then the two specials.</summary>
    public static void WriteClip(string folder)
    {
        Directory.CreateDirectory(folder);
        var symbols = new List<char>();
        static bool Printable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        for (int b = 0; b < 256; b++)
            if (Printable(b)) symbols.Add((char)b);
        int shifted = 0;
        for (int b = 0; b < 256; b++)
            if (!Printable(b)) symbols.Add((char)(256 + shifted++));
        var vocab = new Dictionary<string, int>();
        foreach (char c in symbols) vocab[c.ToString()] = vocab.Count;
        foreach (char c in symbols) vocab[c + "</w>"] = vocab.Count;
        vocab["<|startoftext|>"] = vocab.Count;
        vocab["<|endoftext|>"] = vocab.Count;
        File.WriteAllText(Path.Combine(folder, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\n");
    }

    /// <summary>
    /// Writes a SentencePiece ModelProto: pieces &lt;pad&gt; (0), &lt;/s&gt; (1), &lt;unk&gt; (2) as T5 numbers them, "▁" and every
    /// printable ASCII character with one score, then "▁word" for each of <paramref name="words"/>; a unigram model whose
    /// normaliser only handles whitespace. A whole word scores as one character, so it wins over spelling it out: a
    /// small encoder then sees "red" as one token instead of having to read it from three.
    /// </summary>
    public static void WriteSentencePiece(string path, IEnumerable<string>? words = null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var model = new MemoryStream();
        void Piece(string text, float score, int type)
        {
            var piece = new MemoryStream();
            WriteBytes(piece, 1, Encoding.UTF8.GetBytes(text));
            WriteTag(piece, 2, 5);
            piece.Write(BitConverter.GetBytes(score));
            WriteTag(piece, 3, 0);
            WriteVarint(piece, (ulong)type);
            WriteBytes(model, 1, piece.ToArray());
        }
        const int Normal = 1, Unknown = 2, Control = 3;
        Piece("<pad>", 0, Control);
        Piece("</s>", 0, Control);
        Piece("<unk>", 0, Unknown);
        Piece("\u2581", -1, Normal);
        for (char c = '!'; c <= '~'; c++) Piece(c.ToString(), -1, Normal);
        foreach (string word in (words ?? []).Distinct(StringComparer.Ordinal))
        {
            if (word.Length == 0 || word.Any(c => c is < '!' or > '~'))
                throw new ArgumentException($"'{word}' is not a word of printable ASCII characters");
            Piece("\u2581" + word, -1, Normal);
        }

        var trainer = new MemoryStream();
        foreach (var (field, value) in new[] { (3, 1), (40, 2), (42, 1), (43, 0) })   // unigram; unk, eos, pad ids
        {
            WriteTag(trainer, field, 0);
            WriteVarint(trainer, (ulong)value);
        }
        WriteBytes(model, 2, trainer.ToArray());

        var normalizer = new MemoryStream();
        WriteBytes(normalizer, 1, Encoding.UTF8.GetBytes("identity"));
        foreach (int field in new[] { 3, 4, 5 })   // dummy prefix, collapse whitespace, spaces as ▁
        {
            WriteTag(normalizer, field, 0);
            WriteVarint(normalizer, 1);
        }
        WriteBytes(model, 3, normalizer.ToArray());
        File.WriteAllBytes(path, model.ToArray());
    }

    private static void WriteTag(Stream stream, int field, int wireType) => WriteVarint(stream, (ulong)(field << 3 | wireType));

    private static void WriteBytes(Stream stream, int field, byte[] bytes)
    {
        WriteTag(stream, field, 2);
        WriteVarint(stream, (ulong)bytes.Length);
        stream.Write(bytes);
    }

    private static void WriteVarint(Stream stream, ulong value)
    {
        do
        {
            byte b = (byte)(value & 0x7F);
            value >>= 7;
            stream.WriteByte(value != 0 ? (byte)(b | 0x80) : b);
        } while (value != 0);
    }
}
