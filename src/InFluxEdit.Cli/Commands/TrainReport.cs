using InFluxEdit.Cli.Console;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Commands;

/// <summary>
/// What 'train --json' reports: the steps run and the loss on the training pairs at a fixed σ and noise before and
/// after them (the files written, the LoRA or the whole model, checkpoints and validation folders, are in "written").
/// </summary>
public sealed record TrainReport(int Steps, double EvaluationSigma, double LossBefore, double LossAfter, string? Lora, string? Weights)
{
    public static void Record(CommandOutput output, TrainResult result)
    {
        foreach (string? path in new[] { result.LoraPath, result.WeightsPath }.Concat(result.Checkpoints).Concat(result.ValidationFolders))
            output.Wrote(path);
        output.Took("training", result.Elapsed);
        output.Result = new TrainReport(result.Steps, result.EvaluationSigma, result.LossBefore, result.LossAfter,
            result.LoraPath == null ? null : Path.GetFullPath(result.LoraPath), result.WeightsPath == null ? null : Path.GetFullPath(result.WeightsPath));
    }

    /// <summary>A run stopped by a signal after a step: says how to continue, and returns the signal's exit code.</summary>
    public static int Stopped(CommandOutput output, StopSignal stop, TrainingStoppedException stopped)
    {
        output.Failure = $"stopped by {stop.SignalName ?? "a signal to another rank"} at step {stopped.Step} of {stopped.Steps}; " +
                         $"to continue, run the same command with --resume {stopped.Checkpoint}";
        output.Log.WriteLine(output.Failure);
        output.Wrote(stopped.Checkpoint);
        return stop.IsRequested ? stop.ExitCode : 128 + 15;
    }
}
