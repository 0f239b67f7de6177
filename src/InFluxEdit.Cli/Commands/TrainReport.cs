using InFluxEdit.Cli.Console;
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
}
