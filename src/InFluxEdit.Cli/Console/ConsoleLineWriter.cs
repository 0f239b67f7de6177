using System.Text;
using Spectre.Console;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// A TextWriter that hands whole lines to a Spectre.Console console, so that log lines written while a live progress
/// display runs appear above its bars instead of tearing them. Text is written as it is (never parsed as markup).
/// </summary>
internal sealed class ConsoleLineWriter(IAnsiConsole console) : TextWriter
{
    private readonly StringBuilder _line = new();

    public override Encoding Encoding => Encoding.UTF8;

    public override void Write(char value)
    {
        lock (_line)
        {
            if (value == '\n') EndLine();
            else if (value != '\r') _line.Append(value);
        }
    }

    public override void Write(string? value)
    {
        lock (_line)
            foreach (char c in value ?? "") Write(c);
    }

    /// <summary>Writes a partial line out (a whole one is written at its line break).</summary>
    public override void Flush()
    {
        lock (_line)
            if (_line.Length > 0) EndLine();
    }

    private void EndLine()
    {
        console.WriteLine(_line.ToString());
        _line.Clear();
    }
}
