using System.Diagnostics;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// Training progress as log lines. Small models run hundreds of steps a second: one line per step would flood the
/// terminal and the logs, so the first step, the last and one every two seconds are written.
/// </summary>
public sealed class TrainProgressLines(TextWriter log) : IProgress<TrainProgress>
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);
    private readonly Stopwatch _sinceLine = new();

    public void Report(TrainProgress value)
    {
        if (_sinceLine.IsRunning && value.Step < value.TotalSteps && _sinceLine.Elapsed < Interval) return;
        log.WriteLine(value.Line);
        _sinceLine.Restart();
    }
}
