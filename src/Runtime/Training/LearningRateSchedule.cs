namespace InFluxEdit.Runtime.Training;

public enum ScheduleKind
{
    Constant,

    /// <summary>Linear warm-up from 0, then constant (diffusers' "constant_with_warmup").</summary>
    Warmup,

    /// <summary>Linear warm-up, then half a cosine down to 0 at the last step (diffusers' "cosine").</summary>
    Cosine,
}

/// <summary>
/// The learning rate of each optimiser step, as diffusers' get_scheduler computes it: step counts from 0, so with a
/// warm-up the first step runs at lr 0, exactly as there.
/// </summary>
public sealed record LearningRateSchedule(ScheduleKind Kind, double BaseLearningRate, int WarmupSteps = 0, int TotalSteps = 0)
{
    public static ScheduleKind ParseKind(string name) => name switch
    {
        "constant" => ScheduleKind.Constant,
        "warmup" or "constant_with_warmup" => ScheduleKind.Warmup,
        "cosine" => ScheduleKind.Cosine,
        _ => throw new ArgumentException($"unknown learning-rate schedule '{name}'; use constant, warmup or cosine"),
    };

    /// <summary>The learning rate for the optimiser step with 0-based index <paramref name="step"/>.</summary>
    public double At(int step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "steps count from 0");
        return BaseLearningRate * Factor(step);
    }

    private double Factor(int step)
    {
        if (Kind == ScheduleKind.Constant) return 1.0;
        if (step < WarmupSteps) return (double)step / Math.Max(1, WarmupSteps);
        if (Kind == ScheduleKind.Warmup) return 1.0;
        if (TotalSteps <= 0) throw new InvalidOperationException("a cosine schedule needs the total number of steps");
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress)));
    }
}
