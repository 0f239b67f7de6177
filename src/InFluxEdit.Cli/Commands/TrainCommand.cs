using System.Diagnostics;
using System.Globalization;
using CommandLine;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Cli.Text;
using InFluxEdit.Cli.Training;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("train", HelpText = "Train an editing LoRA on a FLUX.1 Fill model from pairs of images: --method channel (the source as the Fill conditioning image, all-white mask) or concat (a [source | target] diptych, the right half masked). Writes checkpoints every N steps (atomically) and the LoRA at the end; --resume continues exactly.")]
public sealed partial class TrainOptions : TextEncoderOptions
{
    [Option("model", HelpText = "A compiled transformer's name (e.g. flux-fill-dev, flux-fill-tiny) or a checkpoint to recognise. Default: recognised from --weights.")]
    public string? Model { get; set; }

    [Option("weights", HelpText = "The transformer checkpoint (.safetensors, BFL keys).")]
    public string? Weights { get; set; }

    [Option("vae", HelpText = "The autoencoder checkpoint (BFL's ae.safetensors keys). Default: --flux-dir's ae.safetensors.")]
    public string? Vae { get; set; }

    [Option("data", HelpText = "A folder with source/ and target/ (same file stems) and captions as captions/NAME.txt or NAME.txt beside the source; for --method fill, images/ and masks/ instead.")]
    public string? Data { get; set; }

    [Option("input-dir", HelpText = "The seed's layout: a folder of source images (with --target-dir and --caption-dir instead of --data).")]
    public string? InputDir { get; set; }

    [Option("target-dir", HelpText = "The seed's layout: the folder of target images.")]
    public string? TargetDir { get; set; }

    [Option("caption-dir", HelpText = "The seed's layout: the folder of NAME.txt captions.")]
    public string? CaptionDir { get; set; }

    [Option("combined", HelpText = "--data holds ready-made [source | target] diptychs (and their captions) instead of source/ and target/.")]
    public bool Combined { get; set; }

    [Option("method", Default = EditMethod.Channel, HelpText = "channel (method b), concat (method a), or fill (a standard inpainting LoRA from images and masks).")]
    public EditMethod Method { get; set; } = EditMethod.Channel;

    [Option("output", Required = true, HelpText = "The output folder: checkpoints, the latent cache and the final LoRA.")]
    public string Output { get; set; } = "";

    [Option("steps", Default = 1000, HelpText = "Optimizer steps.")]
    public int Steps { get; set; } = 1000;

    [Option("rank", HelpText = "LoRA rank. Default: the model schema's (\"lora\" → \"rank\", 16 for FLUX).")]
    public int? Rank { get; set; }

    [Option("alpha", HelpText = "LoRA alpha (scale = alpha / rank). Default: the schema's alpha with the schema's rank, else the rank.")]
    public double? Alpha { get; set; }

    [Option("preset", HelpText = "Which layers get adapters, a preset of the model's schema (\"lora\" → \"presets\"). FLUX: diffusers (attention q/k/v/out and both MLPs in the double blocks, q/k/v in the single blocks; the default) or kohya (every linear in every block).")]
    public string? Preset { get; set; }

    [Option("train-img-in", HelpText = "Also train img_in (diffusers: x_embedder), the layer that reads the conditioning channels, in full.")]
    public bool TrainImgIn { get; set; }

    [Option("full", HelpText = "Train every weight of the transformer in full instead of a LoRA (pretraining or fine-tuning a base model; the toy models on the CPU). Writes OUTPUT/MODEL.safetensors under the checkpoint's own keys and dtype; --rank, --preset and --train-img-in do not apply.")]
    public bool Full { get; set; }

    [Option("recompute", HelpText = "Per-block recomputation (gradient checkpointing): keep only the activations that cross a block boundary and run each block's forward again before its backward. The same gradients for about one more forward per step; activation memory drops to about one block's. Off by default (on the CPU memory is rarely the limit; it costs about a third more time per step).")]
    public bool Recompute { get; set; }

    [Option("recipe", HelpText = "Apply a published script's training settings, printed as a table at the start; any flag you give still wins. seed: the method's original train_influxedit.py and its shell scripts (Prodigy lr 1 with decay 1e-4 decoupled, bias correction and safeguard warm-up; batch 1 × accumulation 4; rank = alpha = 16, diffusers targets; guidance 1; uniform timesteps; clip 1.0; 512 T5 tokens; resolution 256 for channel, and for concat 512 as the diptych's long side with the seed's caption prefix). diffusers: train_dreambooth_lora_flux.py's defaults (AdamW 1e-4, batch 4, rank 4, guidance 3.5, 512 T5 tokens, resolution 512).")]
    public string? Recipe { get; set; }

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

    [Option("resolution", HelpText = "Training resolution: images are bucketed by aspect ratio at about this many pixels squared, sides multiples of 16 (see --concat-resolution for diptychs). Default: 512.")]
    public int? Resolution { get; set; }

    [Option("concat-resolution", HelpText = "concat: half (each half of the diptych is bucketed at --resolution, so the diptych has twice its pixels) or diptych (the diptych's long side is --resolution, as the seed resizes: 512 gives a 512×256 diptych). Default: half.")]
    public string? ConcatResolution { get; set; }

    [Option("caption-prefix", HelpText = "Text put before every caption while training (and validating), such as the seed's diptych prompt convention. Default: none.")]
    public string? CaptionPrefix { get; set; }

    [Option("seed", Default = 0L, HelpText = "Seed of the adapters' initialisation, the data order, the timesteps and the noise.")]
    public long Seed { get; set; }

    [Option("checkpoint-every", Default = 100, HelpText = "Save a checkpoint every N steps (and at the end).")]
    public int CheckpointEvery { get; set; } = 100;

    [Option("validation", HelpText = "Held-out pairs (the --data layout) to edit every --validate-every steps and at the end: OUTPUT/validation/step-N/ gets each edit and a contact sheet (source | target | result).")]
    public string? Validation { get; set; }

    [Option("validate-every", Default = 0, HelpText = "Validation edits every N steps (0: only at the end, when --validation is given).")]
    public int ValidateEvery { get; set; }

    [Option("validation-steps", Default = 20, HelpText = "Sampling steps of the validation edits.")]
    public int ValidationSteps { get; set; } = 20;

    [Option("resume", HelpText = "A checkpoint of this run to continue from.")]
    public string? Resume { get; set; }

    [Option("format", Default = "kohya", HelpText = "The LoRA file written at the end: kohya (ComfyUI) or diffusers (PEFT).")]
    public string Format { get; set; } = "kohya";

    [Option("loss-region", Default = "all", HelpText = "all tokens (as the seed trains) or masked: only the tokens the mask covers.")]
    public string LossRegion { get; set; } = "all";
}

public static class TrainCommand
{
    private static readonly TimeSpan ProgressLineInterval = TimeSpan.FromSeconds(2);

    /// <summary>Validation edits sample like `edit` does by default (FLUX Fill's guidance 30).</summary>
    private const double ValidationGuidance = 30.0;

    public static int Run(TrainOptions options) => Run(options, System.Console.Out, ModelCatalog.All);

    public static int Run(TrainOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog)
    {
        // The recipe first: it fills what the user left unset, and everything below reads the options as filled.
        var recipe = options.Recipe == null ? null : TrainRecipe.For(options.Recipe, options.Method);
        var recipeRows = recipe?.ApplyTo(options);
        if (options.Steps < 1) throw new ArgumentException($"--steps must be at least 1; got {options.Steps}");
        if (options.Rank < 1) throw new ArgumentException($"--rank must be at least 1; got {options.Rank}");
        string checkpoint = options.Weights ?? options.Model ?? (options.FluxDir != null ? FluxModelFolder.Transformer(options.FluxDir) : null)
            ?? throw new ArgumentException("--weights is required: the transformer checkpoint (or give the checkpoint as --model)");
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(checkpoint, FillPipeline.TransformerFamily, catalog, options.Weights != null ? options.Model : null);
        // Rank, alpha and preset default to the schema's "lora" section.
        var lora = transformerInfo.Descriptor.Lora;
        int rank = options.Rank ?? lora?.Rank ?? 16;
        double alpha = options.Alpha ?? (options.Rank == null && lora != null ? lora.Alpha : rank);
        string preset = options.Preset ?? lora?.DefaultPreset
            ?? throw new ArgumentException($"{transformerInfo.Descriptor.Name} has no LoRA presets in its schema: give --preset");
        var optimizer = options.OptimizerSettings();
        var settings = new TrainingSettings(options.Method, options.Steps, rank, alpha,
            preset, options.TrainImgIn, optimizer, options.LearningRate ?? optimizer.DefaultLearningRate,
            LearningRateSchedule.ParseKind(options.Schedule ?? "constant"), options.WarmupSteps ?? 0, FlowMatching.ParseSampling(options.TimestepSampling ?? "uniform"),
            options.TrainingGuidance(options.Guidance), TrainOptions.PositiveOrDefault(options.Accumulate, "accumulate"), options.MaxGradNorm ?? 1.0, options.Seed,
            Math.Max(1, options.CheckpointEvery), LoraWriter.ParseFormat(options.Format),
            options.LossRegion == "masked" ? Runtime.Training.LossRegion.Masked : Runtime.Training.LossRegion.All)
        {
            Recompute = options.Recompute,
            Full = options.Full,
            BatchSize = TrainOptions.PositiveOrDefault(options.BatchSize, "batch-size"),
            ScheduleCycles = TrainOptions.PositiveOrDefault(options.LrCycles, "lr-cycles"),
            SchedulePower = options.LrPower ?? 1.0,
            LogitMean = options.LogitMean ?? 0.0,
            LogitStd = options.LogitStd ?? 1.0,
            ModeScale = options.ModeScale ?? FlowMatching.ModeScale,
            LossWeighting = FlowMatching.ParseWeighting(options.LossWeighting ?? "none"),
        };
        if (recipe != null) recipe.Write(recipeRows!, log);
        log.WriteLine($"optimizer: {optimizer.Name} ({string.Join(", ", optimizer.Describe().Select(d => $"{d.Name} {d.Value}"))})");

        var dataset = options.Data != null
            ? options.Method == EditMethod.Fill ? PairDataset.FromMasked(options.Data, options.InstancePrompt)
            : options.Combined ? PairDataset.FromCombined(options.Data, options.InstancePrompt) : PairDataset.FromFolder(options.Data, options.InstancePrompt)
            : options.InputDir != null && options.TargetDir != null && options.CaptionDir != null
                ? PairDataset.FromSeparateFolders(options.InputDir, options.TargetDir, options.CaptionDir, options.InstancePrompt)
                : throw new ArgumentException("give --data DIR, or --input-dir, --target-dir and --caption-dir");
        log.WriteLine($"data: {dataset.Pairs.Count} pairs");

        var validation = options.Validation == null ? null
            : options.Method == EditMethod.Fill ? PairDataset.FromMasked(options.Validation, options.InstancePrompt)
            : PairDataset.FromFolder(options.Validation, options.InstancePrompt);
        string vaePath = options.AutoencoderPath(options.Vae);
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        Directory.CreateDirectory(options.Output);

        using var backend = options.CreateBackend(log);
        log.WriteLine($"transformer: {transformerInfo.Descriptor.Name} — {transformerReason}");
        log.WriteLine($"vae: {vaeInfo.Descriptor.Name} — {vaeReason}");
        var captions = dataset.Pairs.Concat(validation?.Pairs ?? []).Select(p => options.CaptionPrefix + p.Caption).ToList();
        var texts = CaptionEncodings.Encode(captions, options, transformerInfo.Descriptor, Path.Combine(options.Output, "cache", "text"),
            backend, catalog, log);
        var examples = CacheExamples(dataset, settings, options, vaePath, vaeInfo, vaeReason, backend, texts, log);

        using var transformer = LoadedModel.Load(checkpoint, transformerInfo, transformerReason, backend);
        using var validationVae = validation == null ? null : LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);
        // Full training updates the weights in place: writable copies (loaded weights are read-only), and a model on them.
        var fullWeights = options.Full ? FullWeightTraining.WritableCopies(backend, transformer.Weights) : null;
        var model = fullWeights == null ? transformer.Model : transformerInfo.Create(backend, fullWeights);
        using var trainer = new FillTrainer(model, fullWeights ?? transformer.Weights, settings, examples);
        if (options.Resume != null)
        {
            trainer.Resume(options.Resume);
            log.WriteLine($"resumed {options.Resume} at step {trainer.Step}");
        }
        log.WriteLine($"training {trainer.Parameters.Count} tensors ({trainer.Parameters.Sum(p => p.Length):N0} values): " +
                      (settings.Full ? "every weight in full"
                          : $"{trainer.Targets.Count} adapters of rank {settings.Rank}, alpha {settings.Alpha}{(settings.TrainImgIn ? ", img_in in full" : "")}") +
                      (settings.Recompute ? "; recomputing each block's activations in the backward pass" : ""));

        // A fixed σ and noise, so the number moves only if the adapters learn (the training draws vary per step).
        const double EvaluationSigma = 0.5;
        double before = trainer.Evaluate(EvaluationSigma, settings.Seed + 1);
        var progress = new TrainingProgress(settings.Steps, trainer.Step);
        var guard = new NonFiniteGuard(warn: message => log.WriteLine("warning: " + message));
        string baseModel = transformerInfo.Descriptor.Name;
        // Small models run hundreds of steps a second: one progress line per step would flood the terminal and the logs.
        var sinceProgressLine = Stopwatch.StartNew();
        bool firstStep = true;
        while (trainer.Step < settings.Steps)
        {
            double loss = trainer.TrainStep(guard);
            if (!double.IsNaN(loss)) progress.Report(trainer.Step, loss);
            bool last = trainer.Step == settings.Steps;
            if (firstStep || last || sinceProgressLine.Elapsed >= ProgressLineInterval)
            {
                log.WriteLine(progress.FormatLine() + (backend is IMemoryStatistics memory ? $", {backend.Name} peak {TrainingProgress.FormatBytes(memory.PeakAllocatedBytes)}" : ""));
                sinceProgressLine.Restart();
                firstStep = false;
            }
            if (validation != null && (last || (options.ValidateEvery > 0 && trainer.Step % options.ValidateEvery == 0)))
                ValidationSheet.Write(Path.Combine(options.Output, "validation", $"step-{trainer.Step:D6}"),
                    new FillPipeline(model, validationVae!.Model), validation.Pairs, settings.Method, caption => texts[options.CaptionPrefix + caption],
                    options.ValidationSteps, ValidationGuidance, settings.Seed, log);
            if (trainer.Step % settings.CheckpointEvery == 0 || last)
            {
                string path = Path.Combine(options.Output, $"checkpoint-{trainer.Step:D6}.safetensors");
                trainer.SaveCheckpoint(path, baseModel);
                log.WriteLine($"checkpoint: {path}");
            }
        }

        double after = trainer.Evaluate(EvaluationSigma, settings.Seed + 1);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"loss on the training pairs at σ = {EvaluationSigma}, fixed noise: {before:F5} before, {after:F5} after"));

        if (fullWeights != null)
        {
            string weightsPath = Path.Combine(options.Output, baseModel + ".safetensors");
            FullWeightTraining.SaveWeights(weightsPath, backend, transformerInfo.Descriptor, fullWeights,
                new Dictionary<string, string> { ["trained"] = $"{options.Method.ToString().ToLowerInvariant()}, {trainer.Step} steps, every weight" });
            log.WriteLine($"weights: {weightsPath}");
            foreach (var weight in fullWeights.Values) weight.Dispose();
            return 0;
        }

        string loraPath = LoraPath(options);
        LoraWriter.Write(loraPath, trainer.Trained(), transformerInfo.Descriptor, settings.Format,
            new LoraExportInfo(options.Method.ToString().ToLowerInvariant(), settings.Rank, settings.Alpha, trainer.Targets, baseModel, trainer.Step));
        log.WriteLine($"lora: {loraPath}");
        return 0;
    }

    /// <summary>Where a run writes its LoRA: OUTPUT/lora-METHOD-FORMAT.safetensors.</summary>
    public static string LoraPath(TrainOptions options) => Path.Combine(options.Output,
        $"lora-{options.Method.ToString().ToLowerInvariant()}-{LoraWriter.ParseFormat(options.Format).ToString().ToLowerInvariant()}.safetensors");

    /// <summary>A mask loaded as an RGB image in [−1, 1], back to [1, 1, H, W] in [0, 1] (mean of the channels).</summary>
    private static HostTensor MaskFromRgb(HostTensor rgb)
    {
        int height = rgb.Shape[2], width = rgb.Shape[3], plane = height * width;
        var mask = new HostTensor(1, 1, height, width);
        for (int i = 0; i < plane; i++)
            mask.Data[i] = Math.Clamp(((rgb.Data[i] + rgb.Data[plane + i] + rgb.Data[2 * plane + i]) / 3f + 1f) / 2f, 0f, 1f);
        return mask;
    }

    /// <summary>
    /// Each pair's conditioning and target latent, encoded once and kept in the output folder's cache (keyed by
    /// method, size and VAE file) so later runs and resumes skip the VAE.
    /// </summary>
    private static List<FillTrainer.Example> CacheExamples(PairDataset dataset, TrainingSettings settings, TrainOptions options,
        string vaePath, CompiledModelInfo vaeInfo, string vaeReason, Runtime.Backends.IBackend backend, IReadOnlyDictionary<string, TextConditioning> texts,
        TextWriter log)
    {
        var buckets = new AspectBuckets(options.Resolution ?? 512);
        bool diptychResolution = options.ConcatResolution switch
        {
            null or "half" => false,
            "diptych" when settings.Method == EditMethod.Concat => true,
            "diptych" => throw new ArgumentException("--concat-resolution diptych applies to --method concat only"),
            _ => throw new ArgumentException($"--concat-resolution must be half or diptych, not '{options.ConcatResolution}'"),
        };
        string cacheDir = Path.Combine(options.Output, "cache");
        Directory.CreateDirectory(cacheDir);
        // The VAE file's full path, size and last write time and the compiled autoencoder: a retrained, replaced or
        // copied file misses the cache (equal sizes are the rule for one architecture) and is encoded again, never a wrong hit.
        var vaeFile = new FileInfo(vaePath);
        string vaeTag = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
            $"{vaeFile.FullName}|{vaeFile.Length}|{vaeFile.LastWriteTimeUtc.Ticks}|{vaeInfo.Descriptor.Name}")))[..16];
        var examples = new List<FillTrainer.Example>();
        int encoded = 0;
        LoadedModel? vae = null;
        try
        {
            var bar = new Console.ProgressBar("latents", "pairs");
            foreach (var pair in dataset.Pairs)
            {
                var bucket = diptychResolution ? buckets.DiptychHalf(pair.Width, pair.Height) : buckets.Assign(pair.Width, pair.Height);
                string method = settings.Method.ToString().ToLowerInvariant();
                string path = Path.Combine(cacheDir, $"{pair.Name}.{method}.{bucket.Width}x{bucket.Height}.{vaeTag}.safetensors");
                if (!File.Exists(path))
                {
                    vae ??= LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);
                    var (source, target) = PairDataset.Load(pair, bucket);
                    HostTensor Encode(HostTensor image) => VaeCodec.Encode(vae.Model, image);
                    // Inpainting: the pair's "target" is the mask; the model learns to restore the masked image.
                    var fillMask = settings.Method == EditMethod.Fill ? MaskFromRgb(target) : null;
                    var condition = FillConditioning.Build(settings.Method, source, fillMask, Encode);
                    var x0 = FillConditioning.TrainingTarget(settings.Method, source, settings.Method == EditMethod.Fill ? source : target, Encode);
                    SafeTensorsWriter.Write(path, new Dictionary<string, HostTensor>
                    {
                        ["img_cond"] = condition.ImgCond,
                        ["img_ids"] = condition.ImgIds,
                        ["x0"] = x0,
                    });
                    encoded++;
                }
                using var file = SafeTensorsFile.Open(path);
                var imgCond = file.ReadFloat32("img_cond");
                // The packed mask is the last 256 features of every conditioning token.
                int maskFeatures = imgCond.Shape[2] - 64;
                var mask = new HostTensor(1, imgCond.Shape[1], maskFeatures);
                for (int token = 0; token < imgCond.Shape[1]; token++)
                    Array.Copy(imgCond.Data, token * imgCond.Shape[2] + 64, mask.Data, token * maskFeatures, maskFeatures);
                examples.Add(new FillTrainer.Example(pair.Name, imgCond, file.ReadFloat32("img_ids"), file.ReadFloat32("x0"),
                    FlowMatching.TokenWeights(settings.LossRegion, mask), texts[options.CaptionPrefix + pair.Caption]));
                bar.Report((examples.Count, dataset.Pairs.Count));
            }
        }
        finally
        {
            vae?.Dispose();
        }
        log.WriteLine($"latents: {examples.Count} pairs, {encoded} encoded, {examples.Count - encoded} from the cache in {cacheDir}");
        return examples;
    }
}
