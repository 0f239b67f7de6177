using System.Diagnostics;
using System.Globalization;
using InFluxEdit.Training;
using Spectre.Console;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// The engine's progress as Spectre.Console bars on a terminal: one bar per stage while it runs (a finished stage
/// leaves one line in the log) and one for the training steps with the smoothed loss. The training log lines are
/// still written, a few at most per second (<see cref="TrainProgressLines"/>), so the loss history stays in the scrollback.
/// </summary>
internal sealed class LiveProgress(ProgressContext context, TextWriter log) : IProgress<StageProgress>, IProgress<TrainProgress>
{
    private readonly TrainProgressLines _trainLines = new(log);
    private readonly Stopwatch _stageClock = new();
    private ProgressTask? _stageTask, _trainTask;
    private StageProgress _stage;

    public void Report(StageProgress value)
    {
        if (_stageTask == null && value == _stage) return; // the finished stage's last report, repeated
        if (_stageTask == null || value.Stage != _stage.Stage || value.Done < _stage.Done)
        {
            FinishStage();
            _stageTask = context.AddTask(Markup.Escape(value.Stage));
            _stageClock.Restart();
        }
        _stage = value;
        _stageTask.MaxValue = Math.Max(1, value.Total);
        _stageTask.Value = value.Done;
        _stageTask.Description = Markup.Escape($"{value.Stage} {value.Done}/{value.Total} {value.Unit}");
        if (value.Done >= value.Total) FinishStage();
    }

    public void Report(TrainProgress value)
    {
        _trainLines.Report(value);
        _trainTask ??= context.AddTask("training");
        _trainTask.MaxValue = Math.Max(1, value.TotalSteps);
        _trainTask.Value = value.Step;
        _trainTask.Description = string.Create(CultureInfo.InvariantCulture, $"step {value.Step}/{value.TotalSteps}, loss {value.SmoothedLoss:G4}");
        if (value.Step >= value.TotalSteps)
        {
            _trainTask.StopTask();
            _trainTask = null;
        }
    }

    private void FinishStage()
    {
        if (_stageTask == null) return;
        _stageTask.StopTask();
        _stageTask = null;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{_stage.Stage}: {_stage.Done}/{_stage.Total} {_stage.Unit} in {_stageClock.Elapsed.TotalSeconds:F1} s"));
    }
}
