using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using InFluxEdit.Generator.Common;

namespace InFluxEdit.Generator.Parsing;

/// <summary>
/// A small strict JSON reader that records line and column of every value. The generator runs on
/// netstandard2.0 where System.Text.Json would have to ship beside the analyzer, and its errors lack the
/// positions our diagnostics need.
/// </summary>
public sealed class JsonReader
{
    private readonly string _path;
    private readonly string _text;
    private int _pos;
    private int _line;
    private int _lineStart;
    private int _depth;

    /// <summary>Deeper nesting is refused: the reader recurses, and a stack overflow would end the compiler, not report.</summary>
    public const int MaxDepth = 128;

    private JsonReader(string path, string text)
    {
        _path = path;
        _text = text;
    }

    public static JsonNode Parse(string path, string text)
    {
        var reader = new JsonReader(path, text);
        reader.SkipWhitespace();
        JsonNode root = reader.ReadValue();
        reader.SkipWhitespace();
        if (reader._pos < text.Length) throw reader.Error("unexpected text after the end of the JSON document");
        return root;
    }

    private JsonNode ReadValue()
    {
        if (_pos >= _text.Length) throw Error("unexpected end of file, expected a value");
        char c = _text[_pos];
        switch (c)
        {
            case '{': return Nested(ReadObject);
            case '[': return Nested(ReadArray);
            case '"':
            {
                int start = _pos, line = _line, col = _pos - _lineStart;
                string s = ReadString();
                return new JsonNode(JsonKind.String, SpanFrom(start, line, col), s);
            }
            case 't': return ReadLiteral("true", JsonKind.True);
            case 'f': return ReadLiteral("false", JsonKind.False);
            case 'n': return ReadLiteral("null", JsonKind.Null);
            default:
                if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber();
                throw Error($"unexpected character '{c}'");
        }
    }

    private JsonNode Nested(Func<JsonNode> read)
    {
        if (++_depth > MaxDepth) throw Error($"objects and arrays nest more than {MaxDepth} levels deep");
        JsonNode node = read();
        _depth--;
        return node;
    }

    private JsonNode ReadObject()
    {
        int start = _pos, line = _line, col = _pos - _lineStart;
        _pos++;
        var members = new List<KeyValuePair<JsonString, JsonNode>>();
        SkipWhitespace();
        if (Peek() == '}')
        {
            _pos++;
            return new JsonNode(JsonKind.Object, SpanFrom(start, line, col), members: members);
        }
        while (true)
        {
            SkipWhitespace();
            if (Peek() != '"') throw Error("expected a property name in double quotes");
            int keyStart = _pos, keyLine = _line, keyCol = _pos - _lineStart;
            string key = ReadString();
            var keySpan = SpanFrom(keyStart, keyLine, keyCol);
            SkipWhitespace();
            Expect(':');
            SkipWhitespace();
            JsonNode value = ReadValue();
            members.Add(new KeyValuePair<JsonString, JsonNode>(new JsonString(key, keySpan), value));
            SkipWhitespace();
            char next = Peek();
            _pos++;
            if (next == '}') break;
            if (next != ',') { _pos--; throw Error("expected ',' or '}' in object"); }
        }
        return new JsonNode(JsonKind.Object, SpanFrom(start, line, col), members: members);
    }

    private JsonNode ReadArray()
    {
        int start = _pos, line = _line, col = _pos - _lineStart;
        _pos++;
        var items = new List<JsonNode>();
        SkipWhitespace();
        if (Peek() == ']')
        {
            _pos++;
            return new JsonNode(JsonKind.Array, SpanFrom(start, line, col), items: items);
        }
        while (true)
        {
            SkipWhitespace();
            items.Add(ReadValue());
            SkipWhitespace();
            char next = Peek();
            _pos++;
            if (next == ']') break;
            if (next != ',') { _pos--; throw Error("expected ',' or ']' in array"); }
        }
        return new JsonNode(JsonKind.Array, SpanFrom(start, line, col), items: items);
    }

    private string ReadString()
    {
        _pos++; // opening quote
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _text.Length) throw Error("unterminated string");
            char c = _text[_pos++];
            if (c == '"') return sb.ToString();
            if (c == '\n') throw Error("line break inside a string");
            if (c != '\\') { sb.Append(c); continue; }
            if (_pos >= _text.Length) throw Error("unterminated escape");
            char e = _text[_pos++];
            switch (e)
            {
                case '"': sb.Append('"'); break;
                case '\\': sb.Append('\\'); break;
                case '/': sb.Append('/'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'u':
                    if (_pos + 4 > _text.Length ||
                        !int.TryParse(_text.Substring(_pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code))
                        throw Error("invalid \\u escape");
                    sb.Append((char)code);
                    _pos += 4;
                    break;
                default: throw Error($"invalid escape '\\{e}'");
            }
        }
    }

    private JsonNode ReadNumber()
    {
        int start = _pos, line = _line, col = _pos - _lineStart;
        if (Peek() == '-') _pos++;
        while (_pos < _text.Length && (char.IsDigit(_text[_pos]) || _text[_pos] == '.' || _text[_pos] == 'e' ||
                                       _text[_pos] == 'E' || _text[_pos] == '+' || _text[_pos] == '-'))
            _pos++;
        string literal = _text.Substring(start, _pos - start);
        if (!double.TryParse(literal, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
        {
            _pos = start;
            throw Error($"invalid number '{literal}'");
        }
        return new JsonNode(JsonKind.Number, SpanFrom(start, line, col), literal);
    }

    private JsonNode ReadLiteral(string word, JsonKind kind)
    {
        int start = _pos, line = _line, col = _pos - _lineStart;
        if (string.CompareOrdinal(_text, _pos, word, 0, word.Length) != 0) throw Error("unexpected word, expected a value");
        _pos += word.Length;
        return new JsonNode(kind, SpanFrom(start, line, col));
    }

    private void SkipWhitespace()
    {
        while (_pos < _text.Length)
        {
            char c = _text[_pos];
            if (c == '\n') { _line++; _lineStart = _pos + 1; }
            else if (c != ' ' && c != '\t' && c != '\r') break;
            _pos++;
        }
    }

    private char Peek() => _pos < _text.Length ? _text[_pos] : '\0';

    private void Expect(char c)
    {
        if (Peek() != c) throw Error($"expected '{c}'");
        _pos++;
    }

    private SourceSpan SpanFrom(int start, int line, int col)
    {
        // Values never span a line break that the reader has not counted: strings reject them, and
        // containers end on the current line, so the current position gives the end.
        return new SourceSpan(_path, start, _pos - start, line, col, _line, _pos - _lineStart);
    }

    private JsonParseException Error(string message)
    {
        int col = _pos - _lineStart;
        var span = new SourceSpan(_path, _pos, _pos < _text.Length ? 1 : 0, _line, col, _line, col + 1);
        return new JsonParseException(message, span);
    }
}

public sealed class JsonParseException : Exception
{
    public JsonParseException(string message, SourceSpan span) : base(message) => Span = span;
    public SourceSpan Span { get; }
}
