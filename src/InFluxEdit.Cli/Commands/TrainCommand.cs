using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Training;

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

    [Option("offload-checkpoints", HelpText = "Keep the values between the transformer's blocks in host memory from their forward until their backward (on CUDA: page-locked, copied in order with the kernels), so the GPU holds about two blocks' worth instead of all (about 3 GB less at 12B 1024², planned). The same gradients, for two copies of each value per step. Meant for small cards with --recompute; on the CPU it changes nothing.")]
    public bool OffloadCheckpoints { get; set; }

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

    [Option("overwrite", HelpText = "Replace the checkpoints and results of an earlier run in --output (without it, a new run into such a folder is refused; --resume continues it instead).")]
    public bool Overwrite { get; set; }

    [Option("export-dtype", Default = "bf16", HelpText = "Element type of the LoRA file: bf16 (as the peers write), f16 or f32 (keeps the trained float32 values).")]
    public string ExportDType { get; set; } = "bf16";

    [Option("loss-region", Default = "all", HelpText = "all tokens (as the seed trains) or masked: only the tokens the mask covers.")]
    public string LossRegion { get; set; } = "all";

    [Option("rank-timeout", Default = 1800, HelpText = "Under mpirun (data-parallel training; --batch-size is then the global batch, split over the ranks): seconds rank 0 waits for the last rank at an exchange before it names the ranks missing and ends the job. A rank that dies ends the job at once.")]
    public int RankTimeout { get; set; } = 1800;
}

public static class TrainCommand
{
    public static int Run(TrainOptions options)
    {
        if (options.RankTimeout < 1) throw new ArgumentException($"--rank-timeout must be at least 1 second; got {options.RankTimeout}");
        // Under mpirun every rank runs this command; rank 0 alone prints (the others' output is quiet).
        using var group = ProcessGroups.FromEnvironment(TimeSpan.FromSeconds(options.RankTimeout));
        return RankedRun.Run(group, () => Run(options, options.CommandOutput, ModelCatalog.All, group: group));
    }

    public static int Run(TrainOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog, StopSignal? stop = null) =>
        Run(options, CommandOutput.Plain(log), catalog, stop);

    /// <param name="stop">Stops the run after a step, with a checkpoint; by default this process's SIGINT and SIGTERM.</param>
    /// <param name="group">The ranks of a data-parallel run (default: this process alone).</param>
    private static int Run(TrainOptions options, CommandOutput output, IReadOnlyList<CompiledModelInfo> catalog, StopSignal? stop = null, IProcessGroup? group = null)
    {
        group ??= SingleProcess.Instance;
        var log = output.Log;
        // The recipe first, printed as a table; the engine reads the request as filled.
        var request = Request(options);
        if (request.Recipe != null)
        {
            var recipe = TrainRecipe.For(request.Recipe, request.Method);
            (request, var rows) = recipe.ApplyTo(request);
            log.WriteLine($"recipe {recipe.Name}: {recipe.Script}");
            var table = output.Table("option", "value", "from");
            foreach (var row in rows) table.AddCells(row.Option, row.Value, row.From);
            output.Write(table);
        }
        using var backend = options.CreateBackend(log, group.LocalRank);
        // The first Ctrl-C or SIGTERM lets the engine finish its step and save a checkpoint; a second Ctrl-C ends the process at once.
        using var processSignals = stop == null ? StopSignal.FromProcessSignals(note => log.WriteLine(note)) : null;
        stop ??= processSignals!;
        try
        {
            var result = LoraTraining.Train(request, backend, log, output.Training, output.Stages, stop.Token, catalog, group);
            TrainReport.Record(output, result);
            DeviceOptions.ReportOffload(backend, log);
            return 0;
        }
        catch (TrainingStoppedException stopped)
        {
            return TrainReport.Stopped(output, stop, stopped);
        }
    }

    /// <summary>The options as the engine's request.</summary>
    public static TrainRequest Request(TrainOptions options) => new()
    {
        FluxDir = options.FluxDir, Model = options.Model, Weights = options.Weights, Vae = options.Vae, Text = options.TextSettings,
        BasePrecision = Runtime.Quantization.BasePrecision.Parse(options.BasePrecision),
        Data = options.Data, InputDir = options.InputDir, TargetDir = options.TargetDir, CaptionDir = options.CaptionDir, Combined = options.Combined,
        Method = options.Method, Output = options.Output, Steps = options.Steps, Rank = options.Rank, Alpha = options.Alpha, Preset = options.Preset,
        TrainImgIn = options.TrainImgIn, Full = options.Full, Recompute = options.Recompute, OffloadCheckpoints = options.OffloadCheckpoints, Recipe = options.Recipe, Optimizer = options.Optimizer,
        LearningRate = options.LearningRate, WeightDecay = options.WeightDecay, Betas = options.Betas, Eps = options.Eps, Decouple = options.Decouple,
        UseBiasCorrection = options.UseBiasCorrection, SafeguardWarmup = options.SafeguardWarmup, DCoef = options.DCoef, Beta3 = options.Beta3,
        GrowthRate = options.GrowthRate, Schedule = options.Schedule, WarmupSteps = options.WarmupSteps, LrCycles = options.LrCycles, LrPower = options.LrPower,
        TimestepSampling = options.TimestepSampling, LogitMean = options.LogitMean, LogitStd = options.LogitStd, ModeScale = options.ModeScale,
        LossWeighting = options.LossWeighting, InstancePrompt = options.InstancePrompt, Guidance = options.Guidance, BatchSize = options.BatchSize,
        Accumulate = options.Accumulate, MaxGradNorm = options.MaxGradNorm, Resolution = options.Resolution == null ? null : TrainingResolutions.Parse(options.Resolution), ConcatResolution = options.ConcatResolution,
        BucketNoUpscale = options.BucketNoUpscale,
        CaptionPrefix = options.CaptionPrefix, MaskSide = options.MaskSide, SeedFrozenImgIn = options.SeedFrozenImgIn,
        Seed = options.Seed, CheckpointEvery = options.CheckpointEvery, Validation = options.Validation, ValidateEvery = options.ValidateEvery,
        ValidationSteps = options.ValidationSteps, Resume = options.Resume, Overwrite = options.Overwrite, Format = options.Format, ExportDType = options.ExportDType, LossRegion = options.LossRegion,
    };

    /// <summary>Where a run writes its LoRA: OUTPUT/lora-METHOD-FORMAT.safetensors.</summary>
    public static string LoraPath(TrainOptions options) => Request(options).LoraPath;

}
