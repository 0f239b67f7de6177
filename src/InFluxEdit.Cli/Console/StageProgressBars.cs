namespace InFluxEdit.Cli.Console;

/// <summary>Draws the engine's progress reports: one <see cref="ProgressBar"/> per stage, in the order they come.</summary>
public sealed class StageProgressBars : IProgress<StageProgress>
{
    private string? _stage;
    private ProgressBar? _bar;

    public void Report(StageProgress value)
    {
        if (_bar == null || value.Stage != _stage)
        {
            _stage = value.Stage;
            _bar = new ProgressBar(value.Stage, value.Unit);
        }
        _bar.Report((value.Done, value.Total));
    }
}
