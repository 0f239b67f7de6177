using System.Text;

namespace InFluxEdit.Runtime.Text;

/// <summary>
/// A SentencePiece unigram tokenizer read from a ModelProto file (T5's spiece.model): the normaliser the model
/// carries (its precompiled character map — nmt_nfkc for T5 —, dummy "▁" prefix, extra whitespace removed,
/// spaces escaped to "▁"), then the best segmentation by piece scores (Viterbi), unknown runs as one unk.
/// Encode follows Hugging Face's T5 tokenizers with <c>padding="max_length", truncation=True</c>: pieces cut to
/// length − 1, then &lt;/s&gt;, then pad ids. As there, the pad, eos and unk pieces' text and T5's sentinels
/// &lt;extra_id_0&gt;…&lt;extra_id_99&gt; are single tokens when a prompt spells them; the text between them is
/// encoded piece by piece, each with its own dummy prefix (T5TokenizerFast, and T5Tokenizer with legacy=True).
/// </summary>
public sealed class SentencePieceTokenizer
{
    private const float UnknownPenalty = 10f;   // sentencepiece's kUnkPenalty
    private const char Space = '▁';

    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly PieceType[] _types;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly int _maxPieceChars;
    private readonly float _unknownScore;
    private readonly PrecompiledCharsMap? _charsMap;
    private readonly (string Text, int Id)[] _specialTokens;

    /// <summary>T5Tokenizer's extra_ids: &lt;extra_id_N&gt; is id VocabularySize + SentinelCount − 1 − N, past the model's pieces.</summary>
    public const int SentinelCount = 100;

    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    private SentencePieceTokenizer(List<(string Piece, float Score, PieceType Type)> pieces, NormalizerSpec normalizer, int[] specialIds)
    {
        _pieces = pieces.Select(p => p.Piece).ToArray();
        _scores = pieces.Select(p => p.Score).ToArray();
        _types = pieces.Select(p => p.Type).ToArray();
        for (int i = 0; i < _pieces.Length; i++)
        {
            _ids.TryAdd(_pieces[i], i);
            if (_types[i] is PieceType.Normal or PieceType.UserDefined)
                _maxPieceChars = Math.Max(_maxPieceChars, _pieces[i].Length);
        }
        var normalScores = pieces.Where(p => p.Type == PieceType.Normal).Select(p => p.Score).ToList();
        _unknownScore = (normalScores.Count > 0 ? normalScores.Min() : 0f) - UnknownPenalty;
        MaxScore = normalScores.Count > 0 ? normalScores.Max() : 0f;
        Normalizer = normalizer;
        _charsMap = normalizer.PrecompiledCharsMap is { Length: > 0 } map ? new PrecompiledCharsMap(map) : null;
        UnknownId = Array.IndexOf(_types, PieceType.Unknown) is var unk and >= 0 ? unk : specialIds[0];
        if (UnknownId < 0 || UnknownId >= _pieces.Length)
            throw new InvalidDataException($"the SentencePiece model has no unknown piece (unk_id {UnknownId}, {_pieces.Length} pieces)");
        EosId = specialIds[1] >= 0 && specialIds[1] < _pieces.Length ? specialIds[1] : _ids.GetValueOrDefault("</s>", 1);
        PadId = specialIds[2] >= 0 && specialIds[2] < _pieces.Length ? specialIds[2] : _ids.GetValueOrDefault("<pad>", 0);
        _specialTokens = new[] { PadId, EosId, UnknownId }
            .Where(id => id >= 0 && id < _pieces.Length && _pieces[id].Length > 0)
            .Select(id => (_pieces[id], id))
            .Concat(Enumerable.Range(0, SentinelCount).Select(n => ($"<extra_id_{n}>", _pieces.Length + SentinelCount - 1 - n)))
            .ToArray();
    }

    public sealed record NormalizerSpec(string Name, byte[]? PrecompiledCharsMap, bool AddDummyPrefix, bool RemoveExtraWhitespaces, bool EscapeWhitespaces);

    public NormalizerSpec Normalizer { get; }
    public int UnknownId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int VocabularySize => _pieces.Length;
    private float MaxScore { get; }

    public string PieceOf(int id) => _pieces[id];

    public static SentencePieceTokenizer Load(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        try
        {
            return Parse(bytes);
        }
        // A truncated or corrupt protobuf runs its reads off the end (ArgumentException: BitConverter past the end).
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or OverflowException)
        {
            throw new InvalidDataException($"{path} is not a SentencePiece ModelProto: {e.Message}");
        }
    }

    /// <summary>ModelProto: 1 pieces {1 piece, 2 score, 3 type}, 2 trainer_spec, 3 normalizer_spec.</summary>
    public static SentencePieceTokenizer Parse(byte[] model)
    {
        var pieces = new List<(string, float, PieceType)>();
        var normalizer = new NormalizerSpec("", null, true, true, true);
        int modelType = 1;
        int[] specialIds = { 0, 1, -1 };   // unk, eos, pad as TrainerSpec defaults them
        var reader = new ProtoReader(model);
        while (reader.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, 2):
                {
                    var piece = new ProtoReader(reader.Bytes());
                    string text = ""; float score = 0; var type = PieceType.Normal;
                    while (piece.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) text = Encoding.UTF8.GetString(piece.Bytes());
                        else if (f == 2 && w == 5) score = piece.Float();
                        else if (f == 3 && w == 0) type = (PieceType)piece.Varint();
                        else piece.Skip(w);
                    }
                    pieces.Add((text, score, type));
                    break;
                }
                case (2, 2):
                {
                    var trainer = new ProtoReader(reader.Bytes());
                    while (trainer.Next(out int f, out int w))
                    {
                        if (w != 0) { trainer.Skip(w); continue; }
                        long v = (long)trainer.Varint();
                        if (f == 3) modelType = (int)v;
                        else if (f == 40) specialIds[0] = (int)v;   // unk_id
                        else if (f == 42) specialIds[1] = (int)v;   // eos_id
                        else if (f == 43) specialIds[2] = (int)v;   // pad_id
                    }
                    break;
                }
                case (3, 2):
                {
                    var spec = new ProtoReader(reader.Bytes());
                    string name = ""; byte[]? map = null; bool dummy = true, extra = true, escape = true;
                    while (spec.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) name = Encoding.UTF8.GetString(spec.Bytes());
                        else if (f == 2 && w == 2) map = spec.Bytes();
                        else if (f == 3 && w == 0) dummy = spec.Varint() != 0;
                        else if (f == 4 && w == 0) extra = spec.Varint() != 0;
                        else if (f == 5 && w == 0) escape = spec.Varint() != 0;
                        else spec.Skip(w);
                    }
                    normalizer = new NormalizerSpec(name, map, dummy, extra, escape);
                    break;
                }
                default:
                    reader.Skip(wire);
                    break;
            }
        }
        if (pieces.Count == 0) throw new InvalidDataException("the SentencePiece model has no pieces");
        if (modelType != 1) throw new InvalidDataException($"SentencePiece model type {modelType} is not unigram (1)");
        return new SentencePieceTokenizer(pieces, normalizer, specialIds);
    }

    /// <summary>The text as the model's normaliser leaves it (spaces as "▁", dummy prefix included).</summary>
    public string Normalize(string text)
    {
        byte[] input = Encoding.UTF8.GetBytes(text);
        var output = new StringBuilder(text.Length + 1);
        int position = 0;
        bool removeExtra = Normalizer.RemoveExtraWhitespaces;
        if (removeExtra)
        {
            while (position < input.Length)
            {
                var (piece, consumed) = NormalizePrefix(input, position);
                if (piece != " ") break;
                position += consumed;
            }
        }
        if (position >= input.Length) return "";
        string space = Normalizer.EscapeWhitespaces ? Space.ToString() : " ";
        if (Normalizer.AddDummyPrefix) output.Append(space);
        bool previousIsSpace = removeExtra;
        while (position < input.Length)
        {
            var (piece, consumed) = NormalizePrefix(input, position);
            position += consumed;
            int start = 0;
            while (previousIsSpace && start < piece.Length && piece[start] == ' ') start++;
            if (start < piece.Length)
            {
                for (int i = start; i < piece.Length; i++)
                    output.Append(piece[i] == ' ' ? space : piece[i].ToString());
                previousIsSpace = piece[^1] == ' ';
            }
            if (!removeExtra) previousIsSpace = false;
        }
        if (removeExtra)
        {
            while (output.Length > 0 && output.ToString(output.Length - space.Length, space.Length) == space)
                output.Length -= space.Length;
        }
        return output.ToString();
    }

    /// <summary>The ids of the text, without the closing &lt;/s&gt;: special tokens it spells, and the best segmentation of the rest.</summary>
    public List<int> Tokenize(string text)
    {
        var ids = new List<int>();
        int start = 0;
        while (true)
        {
            var (at, special) = NextSpecialToken(text, start);
            ids.AddRange(Segment(text[start..at]));
            if (special.Text == null) return ids;
            ids.Add(special.Id);
            start = at + special.Text.Length;
        }
    }

    /// <summary>The earliest special token at or after <paramref name="start"/>, the longest where several start there.</summary>
    private (int At, (string? Text, int Id) Token) NextSpecialToken(string text, int start)
    {
        for (int at = start; at < text.Length; at++)
        {
            (string? Text, int Id) best = (null, 0);
            foreach (var token in _specialTokens)
                if (token.Text.Length > (best.Text?.Length ?? 0) && at + token.Text.Length <= text.Length
                    && string.CompareOrdinal(text, at, token.Text, 0, token.Text.Length) == 0)
                    best = token;
            if (best.Text != null) return (at, best);
        }
        return (text.Length, (null, 0));
    }

    /// <summary>The best segmentation of one stretch of text without special tokens (Viterbi over the normalised text).</summary>
    private List<int> Segment(string text)
    {
        string normalized = Normalize(text);
        // Viterbi over UTF-16 positions that start a code point; pieces are matched as whole strings.
        int n = normalized.Length;
        var bestScore = new float[n + 1];
        var bestId = new int[n + 1];
        var bestStart = new int[n + 1];
        var reached = new bool[n + 1];
        reached[0] = true;
        for (int start = 0; start < n; start++)
        {
            if (!reached[start] || char.IsLowSurrogate(normalized[start])) continue;
            bool singleCharacterFound = false;
            int charLength = char.IsHighSurrogate(normalized[start]) && start + 1 < n ? 2 : 1;
            for (int length = 1; length <= _maxPieceChars && start + length <= n; length++)
            {
                if (start + length < n && char.IsLowSurrogate(normalized[start + length])) continue;
                if (!_ids.TryGetValue(normalized.Substring(start, length), out int id)) continue;
                var type = _types[id];
                if (type is not (PieceType.Normal or PieceType.UserDefined)) continue;
                float score = type == PieceType.UserDefined ? length * MaxScore - 0.1f : _scores[id];
                Relax(start, start + length, id, bestScore[start] + score);
                if (length == charLength) singleCharacterFound = true;
            }
            if (!singleCharacterFound)
                Relax(start, start + charLength, UnknownId, bestScore[start] + _unknownScore);
        }

        var ids = new List<int>();
        for (int end = n; end > 0; end = bestStart[end])
            ids.Add(bestId[end]);
        ids.Reverse();
        // Consecutive unknowns are one unknown piece in sentencepiece's output.
        var merged = new List<int>(ids.Count);
        foreach (int id in ids)
            if (!(id == UnknownId && merged.Count > 0 && merged[^1] == UnknownId)) merged.Add(id);
        return merged;

        void Relax(int from, int to, int id, float score)
        {
            if (!reached[to] || score > bestScore[to])
            {
                reached[to] = true;
                bestScore[to] = score;
                bestId[to] = id;
                bestStart[to] = from;
            }
        }
    }

    /// <summary>Pieces cut to <paramref name="maxLength"/> − 1, &lt;/s&gt;, then pad ids to the length.</summary>
    public int[] Encode(string text, int maxLength)
    {
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "room for </s> is needed");
        var tokens = Tokenize(text);
        int count = Math.Min(tokens.Count, maxLength - 1);
        var ids = new int[maxLength];
        Array.Fill(ids, PadId);
        tokens.CopyTo(0, ids, 0, count);
        ids[count] = EosId;
        return ids;
    }

    /// <summary>The longest charsmap match at the position, or the one UTF-8 character there unchanged.</summary>
    private (string Piece, int Consumed) NormalizePrefix(byte[] input, int position)
    {
        if (_charsMap != null && _charsMap.LongestMatch(input, position) is { } match)
            return match;
        int length = Utf8Length(input[position]);
        if (length == 0 || position + length > input.Length)
            return ("\uFFFD", 1);
        string character = Encoding.UTF8.GetString(input, position, length);
        return (character, length);
    }

    private static int Utf8Length(byte lead) =>
        lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 0;

    /// <summary>
    /// The normaliser's precompiled map: a little-endian uint32 trie size, a Darts double-array trie over UTF-8
    /// bytes whose values are offsets into the NUL-terminated replacement strings that follow it.
    /// </summary>
    private sealed class PrecompiledCharsMap
    {
        private readonly uint[] _units;
        private readonly byte[] _normalized;

        public PrecompiledCharsMap(byte[] blob)
        {
            long trieSize = blob.Length >= 4 ? BitConverter.ToUInt32(blob, 0) : -1;
            if (trieSize < 4 || trieSize % 4 != 0 || 4 + trieSize > blob.Length)
                throw Malformed();
            _units = new uint[trieSize / 4];
            Buffer.BlockCopy(blob, 4, _units, 0, (int)trieSize);
            _normalized = blob[(4 + (int)trieSize)..];
        }

        /// <exception cref="InvalidDataException">The trie points outside itself or its strings.</exception>
        public (string, int)? LongestMatch(byte[] input, int position)
        {
            int value = -1, length = 0;
            uint node = Offset(_units[0]);
            for (int i = position; i < input.Length; i++)
            {
                byte key = input[i];
                if (key == 0) break;
                node ^= key;
                if (node >= _units.Length) break;
                uint unit = _units[node];
                if ((unit & 0x800000FFu) != key) break;
                node ^= Offset(unit);
                if (node >= _units.Length) throw Malformed();
                if (((unit >> 8) & 1) != 0)
                {
                    value = (int)(_units[node] & 0x7FFFFFFFu);
                    length = i - position + 1;
                }
            }
            if (value < 0) return null;
            if (value > _normalized.Length) throw Malformed();
            int end = Array.IndexOf(_normalized, (byte)0, value);
            if (end < 0) end = _normalized.Length;
            return (Encoding.UTF8.GetString(_normalized, value, end - value), length);
        }

        private static InvalidDataException Malformed() => new("the SentencePiece precompiled_charsmap is malformed");

        private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
    }

    private sealed class ProtoReader
    {
        private readonly byte[] _data;
        private int _position;

        public ProtoReader(byte[] data) => _data = data;

        public bool Next(out int field, out int wire)
        {
            if (_position >= _data.Length)
            {
                field = wire = 0;
                return false;
            }
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong result = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = _data[_position++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return result;
                if (shift > 63) throw new InvalidDataException("varint too long");
            }
        }

        public byte[] Bytes()
        {
            int length = checked((int)Varint());
            var bytes = _data.AsSpan(_position, length).ToArray();
            _position += length;
            return bytes;
        }

        public float Float()
        {
            float value = BitConverter.ToSingle(_data, _position);
            _position += 4;
            return value;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _position += 8; break;
                case 2:
                    // Not "_position += Varint()": that reads _position before the varint moves it.
                    int length = checked((int)Varint());
                    _position += length;
                    break;
                case 5: _position += 4; break;
                default: throw new InvalidDataException($"protobuf wire type {wire} is not supported");
            }
        }
    }
}
