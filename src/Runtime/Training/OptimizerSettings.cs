using System.Globalization;
using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// Every hyperparameter of the optimisers a training run can use, checked once. The defaults are those of diffusers'
/// FLUX LoRA scripts (train_dreambooth_lora_flux.py: --adam_weight_decay 1e-4, --prodigy_decouple,
/// --prodigy_use_bias_correction and --prodigy_safeguard_warmup all on), which the seed's train_influxedit.py copies;
/// the optimiser classes themselves keep their packages' defaults (torch.optim.AdamW, prodigyopt.Prodigy).
/// </summary>
public sealed record OptimizerSettings
{
    public const string AdamWName = "adamw", ProdigyName = "prodigy";

    /// <summary>"adamw" or "prodigy".</summary>
    public string Name { get; init; } = AdamWName;

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;
    public double WeightDecay { get; init; } = 1e-4;

    /// <summary>Prodigy's EMA coefficient of its d estimate; null: √beta2, as prodigyopt.</summary>
    public double? Beta3 { get; init; }

    /// <summary>Prodigy: AdamW-style decay of the parameters (true) or an L2 term added to the gradient (false).</summary>
    public bool Decouple { get; init; } = true;

    /// <summary>Prodigy: Adam's bias correction √(1 − β2^k) / (1 − β1^k) on the step.</summary>
    public bool BiasCorrection { get; init; } = true;

    /// <summary>Prodigy: leave lr out of the d estimate's denominator (a warm-up that starts at lr 0 cannot stall d).</summary>
    public bool SafeguardWarmup { get; init; } = true;

    /// <summary>Prodigy: scales the d estimate (prodigyopt's preferred knob).</summary>
    public double DCoefficient { get; init; } = 1.0;

    /// <summary>Prodigy: the most d may grow by per step (∞: unlimited).</summary>
    public double GrowthRate { get; init; } = double.PositiveInfinity;

    /// <summary>Prodigy: the initial d.</summary>
    public double D0 { get; init; } = 1e-6;

    public bool IsProdigy => Name == ProdigyName;

    /// <summary>The learning rate when none is given: 1e-4 for AdamW, 1.0 for Prodigy (which scales its own estimate).</summary>
    public double DefaultLearningRate => IsProdigy ? Prodigy.DefaultLearningRate : AdamW.DefaultLearningRate;

    /// <summary>Throws a one-line error naming the option (as the train command spells it) for any value out of range.</summary>
    public OptimizerSettings Validated()
    {
        if (Name != AdamWName && Name != ProdigyName)
            throw new ArgumentException($"--optimizer must be {AdamWName} or {ProdigyName}, not '{Name}'");
        RequireBeta(Beta1, "--betas (first)");
        RequireBeta(Beta2, "--betas (second)");
        if (Beta3 is { } beta3) RequireBeta(beta3, "--beta3");
        if (!(Epsilon > 0) || !double.IsFinite(Epsilon)) throw new ArgumentException($"--eps must be a positive number; got {Format(Epsilon)}");
        if (!(WeightDecay >= 0) || !double.IsFinite(WeightDecay)) throw new ArgumentException($"--weight-decay must be 0 or more; got {Format(WeightDecay)}");
        if (!(DCoefficient > 0) || !double.IsFinite(DCoefficient)) throw new ArgumentException($"--d-coef must be a positive number; got {Format(DCoefficient)}");
        if (!(GrowthRate >= 1)) throw new ArgumentException($"--growth-rate must be at least 1 (∞ for no limit); got {Format(GrowthRate)}");
        if (!(D0 > 0) || !double.IsFinite(D0)) throw new ArgumentException($"--d0 must be a positive number; got {Format(D0)}");
        return this;
    }

    public IOptimizer Create(ITrainingBackend backend)
    {
        Validated();
        return IsProdigy
            ? new Prodigy(backend, Beta1, Beta2, Beta3, Epsilon, WeightDecay, Decouple, D0, DCoefficient, GrowthRate, BiasCorrection, SafeguardWarmup)
            : new AdamW(backend, Beta1, Beta2, Epsilon, WeightDecay);
    }

    /// <summary>"0.9,0.999" → (0.9, 0.999): the --betas option's text.</summary>
    public static (double Beta1, double Beta2) ParseBetas(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 2
            || !double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double beta1)
            || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double beta2))
            throw new ArgumentException($"--betas takes two numbers separated by a comma, such as 0.9,0.999; got '{text}'");
        return (beta1, beta2);
    }

    /// <summary>The hyperparameters that apply to <see cref="Name"/>, as (name, value) pairs for the run's log.</summary>
    public IEnumerable<(string Name, string Value)> Describe()
    {
        yield return ("betas", $"{Format(Beta1)}, {Format(Beta2)}");
        yield return ("eps", Format(Epsilon));
        yield return ("weight decay", Format(WeightDecay) + (IsProdigy ? Decouple ? " (decoupled)" : " (coupled, L2)" : ""));
        if (!IsProdigy) yield break;
        yield return ("beta3", Beta3 is { } beta3 ? Format(beta3) : "√beta2");
        yield return ("bias correction", BiasCorrection ? "on" : "off");
        yield return ("safeguard warm-up", SafeguardWarmup ? "on" : "off");
        yield return ("d_coef", Format(DCoefficient));
        yield return ("growth rate", Format(GrowthRate));
        yield return ("d0", Format(D0));
    }

    private static void RequireBeta(double beta, string option)
    {
        if (!(beta >= 0 && beta < 1)) throw new ArgumentException($"{option} must lie in [0, 1); got {Format(beta)}");
    }

    /// <summary>A setting as the logs show it: 1e-8 rather than 1E-08, ∞ for no limit.</summary>
    public static string Format(double value) =>
        double.IsPositiveInfinity(value) ? "∞"
        : value != 0 && Math.Abs(value) < 1e-3 ? value.ToString("0.#####e0", CultureInfo.InvariantCulture)
        : value.ToString("G6", CultureInfo.InvariantCulture);
}
