using System.Text;

namespace InFluxEdit.Generator.Emit;

/// <summary>Indented C# text with \n line ends, so generated files are identical on every OS.</summary>
internal sealed class CodeWriter
{
    private readonly StringBuilder _text = new();
    private int _depth;

    public void Line(string line = "")
    {
        if (line.Length > 0) _text.Append(' ', _depth * 4).Append(line);
        _text.Append('\n');
    }

    public void Open(string line)
    {
        Line(line);
        Line("{");
        _depth++;
    }

    public void Close(string suffix = "")
    {
        _depth--;
        Line("}" + suffix);
    }

    public CodeWriter(int depth = 0) => _depth = depth;

    /// <summary>The current indentation level, to start a writer whose text goes inside this one's current block.</summary>
    public int Depth => _depth;

    /// <summary>Another writer's lines, as they are (it was started at this writer's depth).</summary>
    public void Append(CodeWriter other) => _text.Append(other._text);

    public override string ToString() => _text.ToString();
}
