using CommandLine;

namespace InFluxEdit.Cli.Commands;

/// <summary>How to train: the recipe, the optimiser, the schedule, the timesteps and the batches (null: the recipe's or the engine's default).</summary>
public sealed partial class TrainOptions
{
    [Option("recipe", HelpText = "Apply a published script's training settings, printed as a table at the start; any flag you give still wins. seed: the method's original train_influxedit.py and its shell scripts (Prodigy lr 1 with decay 1e-4 decoupled, bias correction and safeguard warm-up; batch 1 × accumulation 4; rank = alpha = 16, diffusers targets; guidance 1; uniform timesteps; clip 1.0; 512 T5 tokens; resolution 256 for channel, and for concat 512 as the diptych's long side with the seed's caption prefix). diffusers: train_dreambooth_lora_flux.py's defaults (AdamW 1e-4, batch 4, rank 4, guidance 3.5, 512 T5 tokens, resolution 512).")]
    public string? Recipe { get; set; }

    [Option(BasePrecisionOption.Name, HelpText = BasePrecisionOption.Help)]
    public string? BasePrecision { get; set; }

    [Option("optimizer", HelpText = "adamw or prodigy. Default: adamw.")]
    public string? Optimizer { get; set; }

    [Option("lr", HelpText = "Learning rate. Default: 1e-4 for AdamW, 1.0 for Prodigy.")]
    public double? LearningRate { get; set; }

    [Option("weight-decay", HelpText = "Weight decay (AdamW: decoupled; Prodigy: see --decouple). Default: 1e-4, as diffusers' and the seed's scripts.")]
    public double? WeightDecay { get; set; }

    [Option("betas", HelpText = "Adam's (and Prodigy's) beta1,beta2. Default: 0.9,0.999.")]
    public string? Betas { get; set; }

    [Option("eps", HelpText = "Adam's (and Prodigy's) epsilon in the denominator. Default: 1e-8.")]
    public double? Eps { get; set; }

    [Option("decouple", HelpText = "Prodigy: true for AdamW-style decoupled weight decay, false for an L2 term in the gradient. Default: true.")]
    public bool? Decouple { get; set; }

    [Option("use-bias-correction", HelpText = "Prodigy: true to apply Adam's bias correction to the step (it scales the first ~1000 steps by 0.15–1). Default: true, as diffusers' and the seed's scripts (the prodigyopt package's default is false).")]
    public bool? UseBiasCorrection { get; set; }

    [Option("safeguard-warmup", HelpText = "Prodigy: true to leave lr out of the step-size estimate's denominator (safe with a warm-up). Default: true, as diffusers' and the seed's scripts (the package's default is false).")]
    public bool? SafeguardWarmup { get; set; }

    [Option("d-coef", HelpText = "Prodigy: scales its step-size estimate (prodigyopt's recommended knob; 0.5 to 2 are typical). Default: 1.")]
    public double? DCoef { get; set; }

    [Option("beta3", HelpText = "Prodigy: the running-average coefficient of its step-size estimate. Default: √beta2.")]
    public double? Beta3 { get; set; }

    [Option("growth-rate", HelpText = "Prodigy: the most its step size may grow per step, e.g. 1.02 for a warm-up effect. Default: unlimited.")]
    public double? GrowthRate { get; set; }

    [Option("schedule", HelpText = "The learning rate over the run, as diffusers' get_scheduler: constant, warmup (constant after a linear warm-up), cosine, linear, cosine-with-restarts (--lr-cycles) or polynomial (--lr-power, down to 1e-7). Default: constant.")]
    public string? Schedule { get; set; }

    [Option("warmup-steps", HelpText = "Linear warm-up steps of every schedule but constant. Default: 0.")]
    public int? WarmupSteps { get; set; }

    [Option("lr-cycles", HelpText = "Hard restarts of the cosine-with-restarts schedule. Default: 1.")]
    public int? LrCycles { get; set; }

    [Option("lr-power", HelpText = "The exponent of the polynomial schedule. Default: 1 (linear to 1e-7).")]
    public double? LrPower { get; set; }

    [Option("timestep-sampling", HelpText = "How σ is drawn: uniform, logit-normal (--logit-mean, --logit-std) or mode (--mode-scale). Default: uniform.")]
    public string? TimestepSampling { get; set; }

    [Option("logit-mean", HelpText = "Mean of logit-normal timestep sampling. Default: 0.")]
    public double? LogitMean { get; set; }

    [Option("logit-std", HelpText = "Standard deviation of logit-normal timestep sampling. Default: 1.")]
    public double? LogitStd { get; set; }

    [Option("mode-scale", HelpText = "Scale of mode timestep sampling. Default: 1.29.")]
    public double? ModeScale { get; set; }

    [Option("loss-weighting", HelpText = "A weight of each example's loss by its σ, as diffusers' weighting schemes: none, sigma-sqrt (σ^-2) or cosmap (2/(π(1 − 2σ + 2σ²))). Default: none.")]
    public string? LossWeighting { get; set; }

    [Option("instance-prompt", HelpText = "The caption of every pair that has no caption file (or an empty one), as the seed's and diffusers' --instance_prompt. Default: none (a missing caption is an error).")]
    public string? InstancePrompt { get; set; }

    [Option("guidance", HelpText = "The guidance input during training. Default: 1, as the seed trains FLUX Fill; the guidance a --flux-dir made by pretrain-toy was pretrained with (30).")]
    public double? Guidance { get; set; }

    [Option("batch-size", HelpText = "Examples in one forward and backward pass, all of one aspect bucket (a batch ends early where the data order moves to another bucket or epoch). Default: 1.")]
    public int? BatchSize { get; set; }

    [Option("accumulate", HelpText = "Batches per optimizer step (gradient accumulation): a step averages the gradients of batch-size × accumulate examples. Default: 1.")]
    public int? Accumulate { get; set; }

    [Option("max-grad-norm", HelpText = "Clip the gradients' global norm to this (0: no clipping). Default: 1.")]
    public double? MaxGradNorm { get; set; }

    [Option("resolution", HelpText = "Training resolution: images are bucketed by aspect ratio at about this many pixels squared, sides multiples of 16 (see --concat-resolution for diptychs). Several, comma-separated (e.g. 256,512,768), as the seed's script takes them: every pair is cached at each, and each batch trains at one drawn uniformly at random, as the seed draws one per batch. Unlike the seed, the draw comes from --seed (reproducible, and --resume continues it), a batch over 1 holds pairs of one bucket at that size (the seed's fails on mixed shapes), the latents are cached at every size (the seed's --cache_latents keeps one random size per step) and each size is given once. Default: 512.")]
    public string? Resolution { get; set; }

    [Option("bucket-no-upscale", HelpText = "An image of at most --resolution² pixels is trained at its own size (sides rounded down to multiples of 16) instead of being scaled up to its bucket (with several sizes, at each), as kohya's bucket_no_upscale: a dataset of mixed sizes keeps each picture's scale.")]
    public bool BucketNoUpscale { get; set; }

    [Option("concat-resolution", HelpText = "concat: half (each half of the diptych is bucketed at --resolution, so the diptych has twice its pixels) or diptych (the diptych's long side is --resolution, as the seed resizes: 512 gives a 512×256 diptych). With several --resolution sizes, each is sized this way. Default: half.")]
    public string? ConcatResolution { get; set; }

    [Option("seed-frozen-img-in", HelpText = "Reproduce a defect of the seed's code, to measure it: img_in's gradient is computed every step and never zeroed, counts in the clipping's norm (and is scaled by it), but is never applied, so the pile-up shrinks the adapters' clipped gradients as training goes on. Not with --train-img-in or --resume.")]
    public bool SeedFrozenImgIn { get; set; }

    [Option("mask-side", HelpText = "concat: right (the right half is the one generated, as the seed's scripts train) or both (each example masks its diptych's left or right half at random, so the model also learns to restore the source beside its edit: the seed's code without --mask_only_right). Default: right.")]
    public string? MaskSide { get; set; }

    [Option("caption-prefix", HelpText = "Text put before every caption while training (and validating), such as the seed's diptych prompt convention. Default: none.")]
    public string? CaptionPrefix { get; set; }

}
