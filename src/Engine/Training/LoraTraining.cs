using System.Diagnostics;
using System.Globalization;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Text;

namespace InFluxEdit.Training;

/// <summary>
/// Trains an editing LoRA (or, with <see cref="TrainRequest.Full"/>, every weight) on a FLUX.1 Fill transformer: the
/// captions are encoded and the pairs' latents cached first, then the steps run with a checkpoint every
/// <see cref="TrainRequest.CheckpointEvery"/> steps, validation edits when asked, and the result written atomically.
/// Over a <see cref="IProcessGroup"/> of several ranks, rank 0 builds the caches, logs, reports progress and writes every
/// file; the others read its caches, check that they start alike, and share every batch.
/// </summary>
public static class LoraTraining
{
    /// <summary>A fixed σ and noise for the before/after loss, so it moves only if the weights learn (the training draws vary per step).</summary>
    public const double EvaluationSigma = 0.5;

    /// <summary>Validation edits sample as an edit does by default (FLUX Fill's guidance 30).</summary>
    private const double ValidationGuidance = 30.0;

    /// <summary>
    /// Runs <paramref name="request"/> on <paramref name="backend"/>. Cancelling saves a checkpoint of the step reached
    /// (continue with <see cref="TrainRequest.Resume"/>) and then throws <see cref="OperationCanceledException"/>.
    /// </summary>
    /// <param name="log">What is loaded, cached and written, one line each (nothing is printed otherwise).</param>
    /// <param name="progress">Every optimizer step.</param>
    /// <param name="stages">Loading and latent encoding.</param>
    /// <param name="catalog">The compiled models to choose from (default: every model of this build).</param>
    /// <param name="group">The ranks of a data-parallel run (default: this process alone); every rank calls this with the same request.</param>
    public static TrainResult Train(TrainRequest request, IBackend backend, TextWriter? log = null, IProgress<TrainProgress>? progress = null,
        IProgress<StageProgress>? stages = null, CancellationToken cancellation = default, IReadOnlyList<CompiledModelInfo>? catalog = null,
        IProcessGroup? group = null)
    {
        group ??= SingleProcess.Instance;
        bool root = group.IsRoot;
        // One voice: rank 0 speaks for the job.
        log = root ? log ?? TextWriter.Null : TextWriter.Null;
        if (!root) (progress, stages) = (null, null);
        catalog ??= ModelCatalog.All;
        var clock = Stopwatch.StartNew();
        // The recipe first: it fills what the request leaves null, and everything below reads the request as filled.
        if (request.Recipe != null) request = TrainRecipe.For(request.Recipe, request.Method).ApplyTo(request).Request;
        if (request.Steps < 1) throw new ArgumentException($"--steps must be at least 1; got {request.Steps}");
        if (request.Rank < 1) throw new ArgumentException($"--rank must be at least 1; got {request.Rank}");
        if (request.Full && request.BasePrecision is { Format: not TensorFormat.F32 })
            throw new ArgumentException($"--full trains every weight in place in float32: drop --base-precision {request.BasePrecision} (or train a LoRA over it)");
        string checkpoint = request.Weights ?? request.Model ?? (request.FluxDir != null ? FluxModelFolder.Transformer(request.FluxDir) : null)
            ?? throw new ArgumentException("--weights is required: the transformer checkpoint (or give the checkpoint as --model)");
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(checkpoint, FillPipeline.TransformerFamily, catalog, request.Weights != null ? request.Model : null);
        var settings = Settings(request, transformerInfo.Descriptor);
        foreach (var (option, value, least) in new[] { ("--alpha", settings.Alpha, double.Epsilon), ("--lr", settings.LearningRate, double.Epsilon), ("--max-grad-norm", settings.MaxGradientNorm, 0.0) })
            if (!double.IsFinite(value) || value < least) throw new ArgumentException($"{option} must be a {(least > 0 ? "positive" : "non-negative")} number; got {value}");
        var exportDType = LoraWriter.ParseDType(request.ExportDType); // refused before training, not after
        if (settings.BatchSize < group.Size)
            throw new ArgumentException($"--batch-size {settings.BatchSize} is the global batch, split over the {group.Size} ranks: give at least {group.Size} (one example per rank)");
        if (group.Size > 1)
            log.WriteLine($"data parallel: {group.Size} ranks share each batch of {settings.BatchSize} ({(settings.BatchSize % group.Size == 0 ? $"{settings.BatchSize / group.Size} per rank" : "unevenly")})");
        bool diptychResolution = request.DiptychResolution;
        var optimizer = settings.Optimizer;
        log.WriteLine($"optimizer: {optimizer.Name} ({string.Join(", ", optimizer.Describe().Select(d => $"{d.Name} {d.Value}"))})");

        string? instancePrompt = request.InstancePrompt;
        var dataset = request.Data != null
            ? request.Method == EditMethod.Fill ? PairDataset.FromMasked(request.Data, instancePrompt)
            : request.Combined ? PairDataset.FromCombined(request.Data, instancePrompt) : PairDataset.FromFolder(request.Data, instancePrompt)
            : request.InputDir != null && request.TargetDir != null && request.CaptionDir != null
                ? PairDataset.FromSeparateFolders(request.InputDir, request.TargetDir, request.CaptionDir, instancePrompt)
                : throw new ArgumentException("give --data DIR, or --input-dir, --target-dir and --caption-dir");
        log.WriteLine($"data: {dataset.Pairs.Count} pairs");

        var validation = request.Validation == null ? null
            : request.Method == EditMethod.Fill ? PairDataset.FromMasked(request.Validation, instancePrompt)
            : PairDataset.FromFolder(request.Validation, instancePrompt);
        string vaePath = request.AutoencoderPath;
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        // One set of buckets per resolution: every pair is cached at each, and each batch trains at one of them.
        var bucketSets = settings.Resolution!.Sizes.Select(size => new AspectBuckets(size, request.BucketNoUpscale)).ToList();
        if (bucketSets.Count > 1)
            log.WriteLine($"resolutions {settings.Resolution}: every pair cached at each; each batch trains at one, drawn uniformly from --seed's stream");
        // The largest image a pass sees, at any resolution: a concat diptych is two halves of its bucket (as LatentCache sizes them).
        long pixels = bucketSets.SelectMany(buckets => dataset.Pairs.Select(p => diptychResolution ? buckets.DiptychHalf(p.Width, p.Height) : buckets.Assign(p.Width, p.Height)))
            .Select(b => (long)b.Width * b.Height).DefaultIfEmpty(0).Max() * (request.Method == EditMethod.Concat ? 2 : 1);
        // A quantized file (fp8, GGUF) stays quantized under a LoRA unless --base-precision says otherwise; full training
        // updates every weight in float32, so it decodes them.
        var precision = request.BasePrecision ?? (request.Full ? null : BasePrecision.Keep);
        MemoryEstimate.RequireForTraining(transformerInfo.Descriptor, vaeInfo.Descriptor, pixels, pixels / 256 + request.TextInEffect.PromptLength,
            settings.Recompute, settings.Full, MemoryEstimate.AvailableBytes(backend), "lower --resolution", "use --recompute",
            LoadedModel.HeldWeightBytes(checkpoint, transformerInfo, precision));
        // On CUDA a plan of the run's LoRA step (a few seconds) refuses, before any caching or loading, what the GPU cannot hold.
        if (!settings.Full)
            Benchmarks.MemoryPlan.RequireFitsGpuForTraining(backend, transformerInfo, (int)(pixels / 256), request.TextInEffect.PromptLength,
                Math.Max(1, settings.BatchSize / group.Size), settings.Rank, settings.Preset, settings.Recompute, settings.OffloadCheckpoints, precision, checkpoint);
        using var runFolder = !root ? null : RunFolder.Claim(request.Output, new RunFolderPolicy("--output", "checkpoint-*.safetensors",
            ["lora-*.safetensors", transformerInfo.Descriptor.Name + ".safetensors"], request.Resume != null, request.Overwrite), note => log.WriteLine("note: " + note));

        log.WriteLine($"transformer: {transformerInfo.Descriptor.Name} — {transformerReason}");
        log.WriteLine($"vae: {vaeInfo.Descriptor.Name} — {vaeReason}");
        var captions = dataset.Pairs.Concat(validation?.Pairs ?? []).Select(p => request.CaptionPrefix + p.Caption).ToList();
        // Rank 0 builds the caches while the others wait, then they read them: the encoders run once per job.
        if (!root) group.Barrier("the caches rank 0 builds", unbounded: true);
        var texts = CaptionEncodings.Encode(captions, request.TextInEffect, transformerInfo.Descriptor, Path.Combine(request.Output, "cache", "text"),
            backend, catalog, log, stages, cacheOnly: !root);
        var examples = LatentCache.Examples(dataset, settings.Method, settings.LossRegion, bucketSets,
            diptychResolution, Path.Combine(request.Output, "cache"), vaePath, vaeInfo.Descriptor.Name, () => LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend),
            texts, request.CaptionPrefix, log, stages, cacheOnly: !root, bothSides: settings.BothSides, zeroChannelMask: request.SeedZeroMask);
        // The held-out loss is measured as an edit poses the task: only the generated tokens, channel's mask all white;
        // with several resolutions, over every pair at each.
        var validationLoss = validation == null || request.ValidationLossEvery <= 0 ? null : new ValidationLossCurve(LatentCache.Examples(validation, settings.Method,
            Runtime.Training.LossRegion.Masked, bucketSets, diptychResolution, Path.Combine(request.Output, "cache", "validation"), vaePath, vaeInfo.Descriptor.Name,
            () => LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend), texts, request.CaptionPrefix, log, stages, cacheOnly: !root).SelectMany(list => list).ToList(),
            request.ValidationLossEvery, settings.Steps, log);
        if (root) group.Barrier("the caches rank 0 builds", unbounded: true);
        // The encoders and the VAE are gone; their parked buffers would sit beside the transformer for the whole run.
        backend.ReleaseCachedMemory();

        // The base may be held quantized (--base-precision); adapters, and img_in when it is trained, stay float beside it.
        using var transformer = LoadedModel.Load(checkpoint, transformerInfo, transformerReason, backend, precision: precision,
            keepFloat: name => (settings.TrainImgIn || settings.SeedFrozenImgIn) && name.StartsWith("img_in.", StringComparison.Ordinal));
        using var validationVae = validation == null || !root || !request.ValidationEdits ? null : LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);
        // Full training updates the weights in place: writable copies (loaded weights are read-only), and a model on them.
        var fullWeights = request.Full ? FullWeightTraining.WritableCopies(backend, transformer.Weights) : null;
        try
        {
            var model = fullWeights == null ? transformer.Model : transformerInfo.Create(backend, fullWeights);
            using var trainer = new FillTrainer(model, fullWeights ?? transformer.Weights, settings, examples, group);
            if (request.Resume != null)
            {
                trainer.Resume(request.Resume);
                log.WriteLine($"resumed {request.Resume} at step {trainer.Step}");
            }
            group.RequireAgreement(
            [
                ("InFluxEdit build", new StateDigest().Add(typeof(LoraTraining).Assembly.ManifestModule.ModuleVersionId.ToString()).Finish()),
                ("base weights (--weights)", new StateDigest().AddFileSample(checkpoint).Finish()),
                .. trainer.StateDigests(),
            ], "start every rank with the same command, build and files (and --resume from the same checkpoint)");
            foreach (string note in trainer.Notes) log.WriteLine("note: " + note);
            if (trainer.Exchange != null) log.WriteLine($"gradients: {trainer.Exchange}");
            log.WriteLine($"training {trainer.Parameters.Count} tensors ({trainer.Parameters.Sum(p => p.Length):N0} values): " +
                          (settings.Full ? "every weight in full"
                              : $"{trainer.Targets.Count} adapters of rank {settings.Rank}, alpha {settings.Alpha}{(settings.TrainImgIn ? ", img_in in full" : "")}") +
                          (settings.Recompute ? "; recomputing each block's activations in the backward pass" : "") +
                          (settings.OffloadCheckpoints ? "; block boundaries wait in host memory" : ""));

            double before = trainer.Evaluate(EvaluationSigma, settings.Seed + 1);
            var tracker = new TrainingProgress(settings.Steps, trainer.Step, examplesPerStep: settings.BatchSize * settings.Accumulate, ranks: group.Size);
            var guard = new NonFiniteGuard(warn: message => log.WriteLine("warning: " + message));
            string baseModel = transformerInfo.Descriptor.Name;
            var checkpoints = new List<string>();
            var validationFolders = new List<string>();
            validationLoss?.MeasureIfDue(trainer);
            string SaveCheckpoint()
            {
                guard.RequireAnyApplied();
                string path = Path.Combine(request.Output, $"checkpoint-{trainer.Step:D6}.safetensors");
                if (root) trainer.SaveCheckpoint(path, baseModel);
                checkpoints.Add(path);
                log.WriteLine($"checkpoint: {path}");
                return path;
            }
            while (trainer.Step < settings.Steps)
            {
                // A stop asked of any rank stops all of them at the same step.
                if (group.Any(cancellation.IsCancellationRequested, $"the stop check before step {trainer.Step + 1}"))
                    throw new TrainingStoppedException(trainer.Step, settings.Steps, SaveCheckpoint(), cancellation);
                double loss = trainer.TrainStep(guard);
                if (!double.IsNaN(loss)) tracker.Report(trainer.Step, loss);
                progress?.Report(new TrainProgress(trainer.Step, settings.Steps, loss, tracker.SmoothedLoss,
                    tracker.FormatLine() + (backend is IMemoryStatistics memory ? $", {backend.Name} peak {TrainingProgress.FormatBytes(memory.PeakAllocatedBytes)}" : ""),
                    (backend as IMemoryStatistics)?.PeakAllocatedBytes));
                bool last = trainer.Step == settings.Steps;
                validationLoss?.MeasureIfDue(trainer);
                if (validationVae != null && request.ValidationEdits && (last || (request.ValidateEvery > 0 && trainer.Step % request.ValidateEvery == 0)))
                {
                    string folder = Path.Combine(request.Output, "validation", $"step-{trainer.Step:D6}");
                    ValidationSheet.Write(folder, new FillPipeline(model, validationVae.Model), validation!.Pairs, settings.Method, caption => texts[request.CaptionPrefix + caption],
                        request.ValidationSteps, ValidationGuidance, settings.Seed, log);
                    validationFolders.Add(folder);
                }
                if (trainer.Step % settings.CheckpointEvery == 0 || last) SaveCheckpoint();
            }

            double after = trainer.Evaluate(EvaluationSigma, settings.Seed + 1);
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"loss on the training pairs at σ = {EvaluationSigma}, fixed noise: {before:F5} before, {after:F5} after"));
            string method = request.Method.ToString().ToLowerInvariant();
            if (fullWeights != null)
            {
                string weightsPath = Path.Combine(request.Output, baseModel + ".safetensors");
                if (root)
                    FullWeightTraining.SaveWeights(weightsPath, backend, transformerInfo.Descriptor, fullWeights,
                        new Dictionary<string, string> { ["trained"] = $"{method}, {trainer.Step} steps, every weight" });
                log.WriteLine($"weights: {weightsPath}");
                return new TrainResult(trainer.Step, null, weightsPath, checkpoints, validationFolders, EvaluationSigma, before, after, clock.Elapsed)
                    { ExchangeSeconds = trainer.ExchangeSeconds, ValidationLosses = validationLoss?.Points ?? [] };
            }

            string loraPath = request.LoraPath;
            if (root)
                LoraWriter.Write(loraPath, trainer.Trained(), transformerInfo.Descriptor, settings.Format,
                    new LoraExportInfo(method, settings.Rank, settings.Alpha, trainer.Targets, baseModel, trainer.Step),
                    LoraSet.BaseWeightsOf(checkpoint), exportDType);
            log.WriteLine($"lora: {loraPath}");
            return new TrainResult(trainer.Step, loraPath, null, checkpoints, validationFolders, EvaluationSigma, before, after, clock.Elapsed)
                { ExchangeSeconds = trainer.ExchangeSeconds, ValidationLosses = validationLoss?.Points ?? [] };
        }
        finally
        {
            if (fullWeights != null) foreach (var weight in fullWeights.Values) weight.Dispose();
        }
    }

    /// <summary>The request's choices with the schema's and the optimizer's defaults filled in.</summary>
    public static TrainingSettings Settings(TrainRequest request, ModelDescriptor transformer)
    {
        // Rank, alpha and preset default to the schema's "lora" section.
        var lora = transformer.Lora;
        int rank = request.Rank ?? lora?.Rank ?? 16;
        double alpha = request.Alpha ?? (request.Rank == null && lora != null ? lora.Alpha : rank);
        string preset = request.Preset ?? lora?.DefaultPreset
            ?? throw new ArgumentException($"{transformer.Name} has no LoRA presets in its schema: give --preset");
        var optimizer = request.OptimizerInEffect();
        return new TrainingSettings(request.Method, request.Steps, rank, alpha,
            preset, request.TrainImgIn, optimizer, request.LearningRate ?? optimizer.DefaultLearningRate,
            LearningRateSchedule.ParseKind(request.Schedule ?? "constant"), request.WarmupSteps ?? 0,
            FlowMatching.ParseSampling(request.TimestepSampling ?? "uniform"), request.GuidanceInEffect,
            TrainRequest.PositiveOrDefault(request.Accumulate, "accumulate"), request.MaxGradNorm ?? 1.0, request.Seed,
            Math.Max(1, request.CheckpointEvery), LoraWriter.ParseFormat(request.Format), request.ParsedLossRegion)
        {
            Recompute = request.Recompute,
            OffloadCheckpoints = request.OffloadCheckpoints,
            BatchSize = TrainRequest.PositiveOrDefault(request.BatchSize, "batch-size"),
            ScheduleCycles = TrainRequest.PositiveOrDefault(request.LrCycles, "lr-cycles"),
            SchedulePower = request.LrPower ?? 1.0,
            LogitMean = request.LogitMean ?? 0.0,
            LogitStd = request.LogitStd ?? 1.0,
            ModeScale = request.ModeScale ?? FlowMatching.ModeScale,
            LossWeighting = FlowMatching.ParseWeighting(request.LossWeighting ?? "none"),
            BothSides = request.BothSides,
            Resolution = request.ResolutionInEffect,
            SeedFrozenImgIn = request.SeedFrozenImgIn,
            Full = request.Full,
        };
    }
}
