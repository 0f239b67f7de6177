using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

/// <summary>The train options turned into checked settings, defaults filled in.</summary>
public sealed partial class TrainOptions
{
    /// <summary>The optimiser flags over <see cref="Runtime.Training.OptimizerSettings"/>' defaults, checked.</summary>
    public OptimizerSettings OptimizerSettings()
    {
        var defaults = new OptimizerSettings();
        var (beta1, beta2) = Betas is { } betas ? Runtime.Training.OptimizerSettings.ParseBetas(betas) : (defaults.Beta1, defaults.Beta2);
        return (defaults with
        {
            Name = Optimizer ?? defaults.Name,
            Beta1 = beta1,
            Beta2 = beta2,
            Beta3 = Beta3,
            Epsilon = Eps ?? defaults.Epsilon,
            WeightDecay = WeightDecay ?? defaults.WeightDecay,
            Decouple = Decouple ?? defaults.Decouple,
            BiasCorrection = UseBiasCorrection ?? defaults.BiasCorrection,
            SafeguardWarmup = SafeguardWarmup ?? defaults.SafeguardWarmup,
            DCoefficient = DCoef ?? defaults.DCoefficient,
            GrowthRate = GrowthRate ?? defaults.GrowthRate,
        }).Validated();
    }

    /// <summary>A count option: at least 1, 1 when not given.</summary>
    public static int PositiveOrDefault(int? value, string option) => value switch
    {
        null => 1,
        >= 1 => value.Value,
        _ => throw new ArgumentException($"--{option} must be at least 1; got {value}"),
    };
}
