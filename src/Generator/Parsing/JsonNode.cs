using System.Collections.Generic;
using InFluxEdit.Generator.Common;

namespace InFluxEdit.Generator.Parsing;

public enum JsonKind { Object, Array, String, Number, True, False, Null }

/// <summary>A JSON value that remembers where it stands in its file.</summary>
public sealed class JsonNode
{
    public JsonNode(JsonKind kind, SourceSpan span, string? text = null,
        List<KeyValuePair<JsonString, JsonNode>>? members = null, List<JsonNode>? items = null)
    {
        Kind = kind;
        Span = span;
        Text = text;
        Members = members ?? new List<KeyValuePair<JsonString, JsonNode>>();
        Items = items ?? new List<JsonNode>();
    }

    public JsonKind Kind { get; }
    public SourceSpan Span { get; }

    /// <summary>The string's value, or the number's literal text.</summary>
    public string? Text { get; }

    /// <summary>Object members in file order (duplicates kept so they can be reported).</summary>
    public List<KeyValuePair<JsonString, JsonNode>> Members { get; }
    public List<JsonNode> Items { get; }

    public JsonNode? Get(string key)
    {
        foreach (var member in Members)
            if (member.Key.Value == key) return member.Value;
        return null;
    }

    public string Describe() => Kind switch
    {
        JsonKind.Object => "an object",
        JsonKind.Array => "an array",
        JsonKind.String => "a string",
        JsonKind.Number => "a number",
        JsonKind.Null => "null",
        _ => "a boolean",
    };
}

/// <summary>An object key with its position.</summary>
public readonly record struct JsonString(string Value, SourceSpan Span);
