namespace InFluxEdit.Training;

/// <summary>
/// Measures the held-out pairs' loss (<see cref="ValidationLoss"/>) as a run goes: at every multiple of the interval
/// and at the last step. The noise is the same at every point and in every run, so the curves of different runs and
/// seeds differ only by what the weights learned.
/// </summary>
internal sealed class ValidationLossCurve(IReadOnlyList<FillTrainer.Example> heldOut, int every, int lastStep, TextWriter log)
{
    /// <summary>The noise of every measurement (not the run's seed: seeds then vary only the training).</summary>
    private const long NoiseSeed = 1;

    private readonly List<ValidationLoss> _points = [];

    public IReadOnlyList<ValidationLoss> Points => _points;

    /// <summary>Measures at the trainer's step when it is due (step 0 included) and not yet measured.</summary>
    public void MeasureIfDue(FillTrainer trainer)
    {
        if ((trainer.Step % every != 0 && trainer.Step != lastStep) || (_points.Count > 0 && _points[^1].Step == trainer.Step)) return;
        double loss = trainer.Evaluate(LoraTraining.EvaluationSigma, NoiseSeed, heldOut);
        _points.Add(new ValidationLoss(trainer.Step, loss));
        log.WriteLine(FormattableString.Invariant($"validation loss at step {trainer.Step}: {loss:F5} ({heldOut.DistinctBy(e => e.Name).Count()} pairs, σ = {LoraTraining.EvaluationSigma})"));
    }
}
