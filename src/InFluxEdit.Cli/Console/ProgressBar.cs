using System.Diagnostics;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// A one-line progress bar on stderr with rate and ETA; redrawn in place on a terminal, printed every 10%
/// when the output is redirected (logs stay readable).
/// </summary>
public sealed class ProgressBar : IProgress<(int Done, int Total)>
{
    private readonly string _label;
    private readonly string _unit;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly bool _interactive = !System.Console.IsErrorRedirected;
    private int _lastDecile = -1;

    public ProgressBar(string label, string unit = "it")
    {
        _label = label;
        _unit = unit;
    }

    public void Report((int Done, int Total) value)
    {
        var (done, total) = value;
        double seconds = _clock.Elapsed.TotalSeconds;
        double rate = seconds > 0 ? done / seconds : 0;
        double eta = rate > 0 ? (total - done) / rate : 0;
        double fraction = total == 0 ? 1 : (double)done / total;
        int filled = (int)(fraction * 24);
        string line = $"{_label} [{new string('#', filled)}{new string('.', 24 - filled)}] {done}/{total} " +
                      $"{rate:F1} {_unit}/s, {seconds:F1}s elapsed, ETA {eta:F0}s";
        if (_interactive)
        {
            System.Console.Error.Write("\r" + line);
            if (done >= total) System.Console.Error.WriteLine();
        }
        else
        {
            int decile = (int)(fraction * 10);
            if (decile == _lastDecile) return;
            _lastDecile = decile;
            System.Console.Error.WriteLine(line);
        }
    }
}
