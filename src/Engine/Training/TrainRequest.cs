using InFluxEdit.Fill;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Text;

namespace InFluxEdit.Training;

/// <summary>
/// One training run of <see cref="LoraTraining.Train"/>: the base model, the pairs, and how to train. Null values take
/// the defaults the README gives (the schema's LoRA rank, alpha and preset; the optimizer's learning rate; the guidance
/// a toy base was pretrained with).
/// </summary>
public sealed record TrainRequest : ModelSelection
{
    /// <summary>The pairs (source/ and target/, or images/ and masks/ for <see cref="EditMethod.Fill"/>).</summary>
    public string? Data { get; init; }

    /// <summary>The seed's layout instead of <see cref="Data"/>: source images, target images and NAME.txt captions.</summary>
    public string? InputDir { get; init; }
    public string? TargetDir { get; init; }
    public string? CaptionDir { get; init; }

    /// <summary><see cref="Data"/> holds ready-made [source | target] diptychs.</summary>
    public bool Combined { get; init; }

    public EditMethod Method { get; init; } = EditMethod.Channel;

    /// <summary>The run's folder: checkpoints, the latent and text caches, validation edits and the result.</summary>
    public required string Output { get; init; }

    public int Steps { get; init; } = 1000;
    public int? Rank { get; init; }
    public double? Alpha { get; init; }
    public string? Preset { get; init; }
    public bool TrainImgIn { get; init; }

    /// <summary>Every weight of the transformer in full instead of a LoRA.</summary>
    public bool Full { get; init; }

    /// <summary>Per-block recomputation (gradient checkpointing).</summary>
    public bool Recompute { get; init; }

    /// <summary>The values between blocks wait in host memory for the backward (<see cref="Runtime.Models.TrainingState.OffloadCheckpoints"/>).</summary>
    public bool OffloadCheckpoints { get; init; }

    /// <summary>A published script's settings for every setting left null here: seed or diffusers (see <see cref="TrainRecipe"/>).</summary>
    public string? Recipe { get; init; }

    /// <summary>adamw or prodigy; default adamw.</summary>
    public string? Optimizer { get; init; }
    public double? LearningRate { get; init; }

    /// <summary>The optimizer's hyper-parameters; null ones take <see cref="OptimizerSettings"/>' defaults.</summary>
    public double? WeightDecay { get; init; }

    /// <summary>beta1,beta2.</summary>
    public string? Betas { get; init; }
    public double? Eps { get; init; }
    public bool? Decouple { get; init; }
    public bool? UseBiasCorrection { get; init; }
    public bool? SafeguardWarmup { get; init; }
    public double? DCoef { get; init; }
    public double? Beta3 { get; init; }
    public double? GrowthRate { get; init; }

    /// <summary>constant (the default), warmup, cosine, linear, cosine-with-restarts or polynomial.</summary>
    public string? Schedule { get; init; }
    public int? WarmupSteps { get; init; }

    /// <summary>Hard restarts of cosine-with-restarts; default 1.</summary>
    public int? LrCycles { get; init; }

    /// <summary>The polynomial schedule's exponent; default 1.</summary>
    public double? LrPower { get; init; }

    /// <summary>uniform (the default), logit-normal or mode.</summary>
    public string? TimestepSampling { get; init; }
    public double? LogitMean { get; init; }
    public double? LogitStd { get; init; }
    public double? ModeScale { get; init; }

    /// <summary>none (the default), sigma-sqrt or cosmap.</summary>
    public string? LossWeighting { get; init; }

    /// <summary>The caption of every pair without one.</summary>
    public string? InstancePrompt { get; init; }
    public double? Guidance { get; init; }

    /// <summary>Examples in one forward and backward pass, all of one bucket; default 1.</summary>
    public int? BatchSize { get; init; }

    /// <summary>Batches per optimizer step; default 1.</summary>
    public int? Accumulate { get; init; }

    /// <summary>The gradients' global norm is clipped to this (0: no clipping); default 1.</summary>
    public double? MaxGradNorm { get; init; }

    /// <summary>Images are bucketed by aspect ratio at about this many pixels squared; default 512. Several: each batch at one of them (see <see cref="TrainingResolutions"/>).</summary>
    public TrainingResolutions? Resolution { get; init; }

    /// <summary>concat: half (the default: each half bucketed at <see cref="Resolution"/>) or diptych (the diptych's long side is it).</summary>
    public string? ConcatResolution { get; init; }

    /// <summary>Images of at most <see cref="Resolution"/>² pixels keep their own size instead of being scaled up to a bucket.</summary>
    public bool BucketNoUpscale { get; init; }

    /// <summary>concat: right (the default: the right half is always the one generated, as the seed's scripts train with --mask_only_right) or both (left or right at random per example, the seed's code without that flag).</summary>
    public string? MaskSide { get; init; }

    /// <summary>Text put before every caption while training and validating.</summary>
    public string? CaptionPrefix { get; init; }
    public long Seed { get; init; }
    public int CheckpointEvery { get; init; } = 100;

    /// <summary>Held-out pairs to edit every <see cref="ValidateEvery"/> steps and at the end.</summary>
    public string? Validation { get; init; }
    public int ValidateEvery { get; init; }
    public int ValidationSteps { get; init; } = 20;

    /// <summary>Whether <see cref="Validation"/>'s pairs are edited (a sheet per validation); off, only their loss is measured.</summary>
    public bool ValidationEdits { get; init; } = true;

    /// <summary>
    /// The <see cref="Validation"/> pairs' loss (<see cref="ValidationLoss"/>) before the first step, every this many
    /// steps and at the end; 0: never. Cheap (one forward per pair), unlike the edits.
    /// </summary>
    public int ValidationLossEvery { get; init; }

    /// <summary>Channel: train under the all-zero mask the seed's code uses (edits still use all white), to measure that defect.</summary>
    public bool SeedZeroMask { get; init; }

    /// <summary>
    /// img_in left as the seed's code leaves it: its gradient computed every step, never zeroed (it is not in the
    /// optimizer), counted in the gradient norm and scaled by the clipping, but never applied: the build-up shrinks the
    /// adapters' clipped gradients as training goes on. To measure that defect.
    /// </summary>
    public bool SeedFrozenImgIn { get; init; }

    /// <summary>A checkpoint of this run to continue from.</summary>
    public string? Resume { get; init; }

    /// <summary>Replace an earlier run's checkpoints and results in <see cref="Output"/>; without it such a folder is refused.</summary>
    public bool Overwrite { get; init; }

    /// <summary>The LoRA file's format: kohya (ComfyUI) or diffusers (PEFT).</summary>
    public string Format { get; init; } = "kohya";

    /// <summary>The LoRA file's element type: bf16 (as the peers write), f16 or f32 (the trained float32 values).</summary>
    public string ExportDType { get; init; } = "bf16";

    /// <summary>all tokens, or masked: only the tokens the mask covers.</summary>
    public string LossRegion { get; init; } = "all";

    /// <summary>The guidance input while training: <see cref="Guidance"/>, else the one a toy base was trained with, else 1 (as the seed trains FLUX Fill).</summary>
    public double GuidanceInEffect => FluxModelFolder.TrainingGuidance(FluxDir, Guidance);

    /// <summary>Where the run writes its LoRA: OUTPUT/lora-METHOD-FORMAT.safetensors.</summary>
    public string LoraPath => Path.Combine(Output,
        $"lora-{Method.ToString().ToLowerInvariant()}-{LoraWriter.ParseFormat(Format).ToString().ToLowerInvariant()}.safetensors");

    /// <summary>The optimizer settings over <see cref="OptimizerSettings"/>' defaults, checked.</summary>
    public OptimizerSettings OptimizerInEffect()
    {
        var defaults = new OptimizerSettings();
        var (beta1, beta2) = Betas is { } betas ? OptimizerSettings.ParseBetas(betas) : (defaults.Beta1, defaults.Beta2);
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

    /// <summary><see cref="Resolution"/> or 512, checked.</summary>
    internal TrainingResolutions ResolutionInEffect => (Resolution ?? 512).Validated();

    /// <summary>Whether a concat diptych's long side is <see cref="Resolution"/> (rather than each half's area).</summary>
    internal bool DiptychResolution => ConcatResolution switch
    {
        null or "half" => false,
        "diptych" when Method == EditMethod.Concat => true,
        "diptych" => throw new ArgumentException("--concat-resolution diptych applies to --method concat only"),
        _ => throw new ArgumentException($"--concat-resolution must be half or diptych, not '{ConcatResolution}'"),
    };

    /// <summary>Whether a concat example masks either half of its diptych at random.</summary>
    internal bool BothSides => MaskSide switch
    {
        null or "right" => false,
        "both" when Method == EditMethod.Concat => true,
        "both" => throw new ArgumentException("--mask-side both applies to --method concat only"),
        _ => throw new ArgumentException($"--mask-side must be right or both, not '{MaskSide}'"),
    };

    /// <summary>A count setting: at least 1, 1 when not given.</summary>
    internal static int PositiveOrDefault(int? value, string option) => value switch
    {
        null => 1,
        >= 1 => value.Value,
        _ => throw new ArgumentException($"--{option} must be at least 1; got {value}"),
    };

    internal LossRegion ParsedLossRegion => LossRegion == "masked" ? Runtime.Training.LossRegion.Masked : Runtime.Training.LossRegion.All;
}

/// <summary>One optimizer step's report: where the run is and how its loss goes.</summary>
/// <param name="Line">The step, loss, smoothed loss, rate and ETA as one line for a log.</param>
/// <param name="PeakDeviceBytes">The most the backend has held, where it counts.</param>
public readonly record struct TrainProgress(int Step, int TotalSteps, double Loss, double SmoothedLoss, string Line, long? PeakDeviceBytes);

/// <summary>What a run wrote and how well the weights fit the training pairs before and after.</summary>
/// <param name="LoraPath">The LoRA written at the end; null when <see cref="TrainRequest.Full"/>.</param>
/// <param name="WeightsPath">The whole trained transformer, when <see cref="TrainRequest.Full"/>.</param>
/// <param name="LossBefore">The loss on the training pairs at σ = <paramref name="EvaluationSigma"/> with fixed noise, before this run.</param>
public sealed record TrainResult(int Steps, string? LoraPath, string? WeightsPath, IReadOnlyList<string> Checkpoints, IReadOnlyList<string> ValidationFolders,
    double EvaluationSigma, double LossBefore, double LossAfter, TimeSpan Elapsed)
{
    /// <summary>Seconds spent summing gradients over the ranks of a data-parallel run (0 in one process).</summary>
    public double ExchangeSeconds { get; init; }

    /// <summary>The validation pairs' loss at the steps <see cref="TrainRequest.ValidationLossEvery"/> chose, step 0 first.</summary>
    public IReadOnlyList<ValidationLoss> ValidationLosses { get; init; } = [];
}

/// <summary>
/// The held-out pairs' flow-matching loss after <paramref name="Step"/> steps, at σ = <see cref="LoraTraining.EvaluationSigma"/>
/// with fixed noise, over the tokens the edit generates (concat: the right half; channel: all), under the conditioning
/// an edit uses (channel's all-white mask even for <see cref="TrainRequest.SeedZeroMask"/>).
/// </summary>
public readonly record struct ValidationLoss(int Step, double Loss);
