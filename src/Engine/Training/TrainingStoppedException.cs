namespace InFluxEdit.Training;

/// <summary>
/// A training run stopped on request after a whole step, with that step's checkpoint written: continue it by
/// resuming from <see cref="Checkpoint"/>.
/// </summary>
public sealed class TrainingStoppedException(int step, int steps, string checkpoint, CancellationToken token)
    : OperationCanceledException($"stopped at step {step} of {steps}; to continue, resume from {checkpoint}", token)
{
    public int Step { get; } = step;
    public int Steps { get; } = steps;
    public string Checkpoint { get; } = checkpoint;
}
