namespace InFluxEdit.Runtime.Training;

public enum ScheduleKind
{
    Constant,

    /// <summary>Linear warm-up from 0, then constant (diffusers' "constant_with_warmup").</summary>
    Warmup,

    /// <summary>Linear warm-up, then half a cosine down to 0 at the last step (diffusers' "cosine").</summary>
    Cosine,

    /// <summary>Linear warm-up, then a straight line down to 0 at the last step (diffusers' "linear").</summary>
    Linear,

    /// <summary>Linear warm-up, then <see cref="LearningRateSchedule.Cycles"/> half cosines, each restarting at the full rate (diffusers' "cosine_with_restarts").</summary>
    CosineWithRestarts,

    /// <summary>Linear warm-up, then (lr − lr_end)·(1 − progress)^power + lr_end (diffusers' "polynomial", lr_end 1e-7).</summary>
    Polynomial,
}

/// <summary>
/// The learning rate of each optimiser step, as diffusers' get_scheduler computes it: step counts from 0, so with a
/// warm-up the first step runs at lr 0, exactly as there.
/// </summary>
public sealed record LearningRateSchedule(ScheduleKind Kind, double BaseLearningRate, int WarmupSteps = 0, int TotalSteps = 0)
{
    /// <summary>diffusers' polynomial schedule ends here (its lr_end default).</summary>
    public const double PolynomialEndLearningRate = 1e-7;

    /// <summary>Restarts of <see cref="ScheduleKind.CosineWithRestarts"/> (diffusers' --lr_num_cycles).</summary>
    public int Cycles { get; init; } = 1;

    /// <summary>The exponent of <see cref="ScheduleKind.Polynomial"/> (diffusers' --lr_power).</summary>
    public double Power { get; init; } = 1.0;

    public static ScheduleKind ParseKind(string name) => name switch
    {
        "constant" => ScheduleKind.Constant,
        "warmup" or "constant_with_warmup" => ScheduleKind.Warmup,
        "cosine" => ScheduleKind.Cosine,
        "linear" => ScheduleKind.Linear,
        "cosine-with-restarts" or "cosine_with_restarts" => ScheduleKind.CosineWithRestarts,
        "polynomial" => ScheduleKind.Polynomial,
        _ => throw new ArgumentException($"unknown learning-rate schedule '{name}'; use constant, warmup, cosine, linear, cosine-with-restarts or polynomial"),
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
        if (TotalSteps <= 0) throw new InvalidOperationException($"a {Kind} schedule needs the total number of steps");
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        switch (Kind)
        {
            case ScheduleKind.Cosine:
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress)));
            case ScheduleKind.Linear:
                return Math.Max(0.0, (double)(TotalSteps - step) / Math.Max(1, TotalSteps - WarmupSteps));
            case ScheduleKind.CosineWithRestarts:
                if (Cycles < 1) throw new InvalidOperationException($"a cosine schedule with restarts needs at least 1 cycle; got {Cycles}");
                return progress >= 1.0 ? 0.0 : Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * (Cycles * progress % 1.0))));
            case ScheduleKind.Polynomial:
                if (!(BaseLearningRate > PolynomialEndLearningRate))
                    throw new InvalidOperationException($"a polynomial schedule needs a learning rate above its end, {PolynomialEndLearningRate}; got {BaseLearningRate}");
                if (step > TotalSteps) return PolynomialEndLearningRate / BaseLearningRate;
                // diffusers divides by the decay steps unguarded; at least 1 keeps a warm-up as long as the run finite.
                double remaining = 1.0 - (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
                return ((BaseLearningRate - PolynomialEndLearningRate) * Math.Pow(remaining, Power) + PolynomialEndLearningRate) / BaseLearningRate;
            default:
                throw new ArgumentOutOfRangeException(nameof(Kind), Kind, null);
        }
    }
}
