using System.Diagnostics;
using System.Globalization;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// The engine's stage progress as plain log lines, for output that is not a terminal (CI logs, pipes): no bar redrawn
/// in place, one line when a stage starts and every 10% of it, with its rate and the time left.
/// </summary>
public sealed class StageProgressLines(TextWriter writer) : IProgress<StageProgress>
{
    private readonly Stopwatch _clock = new();
    private string? _stage;
    private int _lastDecile = -1;

    public void Report(StageProgress value)
    {
        if (value.Stage != _stage)
        {
            _stage = value.Stage;
            _lastDecile = -1;
            _clock.Restart();
        }
        double fraction = value.Total <= 0 ? 1 : Math.Clamp((double)value.Done / value.Total, 0, 1);
        int decile = (int)(fraction * 10);
        if (decile == _lastDecile) return;
        _lastDecile = decile;
        double seconds = _clock.Elapsed.TotalSeconds;
        double rate = seconds > 0 ? value.Done / seconds : 0;
        double eta = rate > 0 ? (value.Total - value.Done) / rate : 0;
        writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{value.Stage}: {value.Done}/{value.Total} {value.Unit} ({fraction * 100:F0}%), {rate:F1} {value.Unit}/s, {seconds:F1} s elapsed, ETA {eta:F0} s"));
    }
}
