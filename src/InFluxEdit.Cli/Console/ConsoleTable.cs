namespace InFluxEdit.Cli.Console;

/// <summary>A plain-text table with columns sized to their contents (markdown-compatible).</summary>
public sealed class ConsoleTable
{
    private readonly string[] _headers;
    private readonly List<string[]> _rows = new();

    public ConsoleTable(params string[] headers) => _headers = headers;

    public void Add(params string[] cells) => _rows.Add(cells);

    public void Write(TextWriter writer)
    {
        var widths = _headers.Select((h, i) => Math.Max(h.Length, _rows.Count == 0 ? 0 : _rows.Max(r => r[i].Length))).ToArray();
        writer.WriteLine("| " + string.Join(" | ", _headers.Select((h, i) => h.PadRight(widths[i]))) + " |");
        writer.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in _rows)
            writer.WriteLine("| " + string.Join(" | ", row.Select((c, i) => c.PadRight(widths[i]))) + " |");
    }
}
