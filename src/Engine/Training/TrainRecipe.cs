using System.Globalization;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Text;

namespace InFluxEdit.Training;

/// <summary>
/// A named set of training settings taken from a published training script: <see cref="TrainRequest.Recipe"/> fills
/// every setting the request leaves null, so each stays overridable by its own flag. <see cref="Values"/> holds the
/// recipe's settings (the rest null); <see cref="Sources"/> says, per option, where in the script the value comes from.
/// </summary>
public sealed class TrainRecipe
{
    public const string Seed = "seed", Diffusers = "diffusers";

    /// <summary>The seed's data tool prefixes every diptych caption with this (typo included: it is what the model saw).</summary>
    public const string SeedConcatCaptionPrefix = "Before and after image. On the left half a cricle and on the right side the very same circle like this: ";

    private TrainRecipe(string name, string script, TrainRequest values, IReadOnlyDictionary<string, string> sources)
    {
        Name = name;
        Script = script;
        Values = values;
        Sources = sources;
    }

    public string Name { get; }

    /// <summary>The script the recipe follows, with the commit read.</summary>
    public string Script { get; }

    public TrainRequest Values { get; }

    /// <summary>Option name (without dashes) → where the script sets it.</summary>
    public IReadOnlyDictionary<string, string> Sources { get; }

    /// <summary>
    /// The recipe for a method. seed: andjoer/InFluxEdit at cf3c914 (train_influxedit.py and its two shell scripts:
    /// train_circles_edit.sh for channel, train_circles_combined.sh for concat). diffusers: huggingface/diffusers
    /// examples/dreambooth/train_dreambooth_lora_flux.py at 5700e52, its argparse defaults. Neither sets the run's
    /// length, checkpoints or validation (the seed's 100,000 steps are a run, not a setting): those stay the flags'.
    /// </summary>
    public static TrainRecipe For(string name, EditMethod method) => name switch
    {
        Seed => SeedRecipe(method),
        Diffusers => DiffusersRecipe(),
        _ => throw new ArgumentException($"unknown --recipe '{name}': use {Seed} (andjoer/InFluxEdit's train_influxedit.py and shell scripts) or {Diffusers} (diffusers' train_dreambooth_lora_flux.py defaults)"),
    };

    private static TrainRecipe SeedRecipe(EditMethod method)
    {
        // Channel follows train_circles_edit.sh (--mode edit); concat train_circles_combined.sh (--use_split_mask
        // --mask_only_right); fill, which the seed runs with its own masks, the same flags as the edit script.
        string script = method == EditMethod.Concat ? "train_circles_combined.sh" : "train_circles_edit.sh";
        // train_influxedit.py keeps diffusers' argparse defaults for everything its scripts do not set.
        var values = DiffusersDefaults() with
        {
            Optimizer = "prodigy",
            LearningRate = 1.0,
            BatchSize = 1,
            Accumulate = 4,
            Rank = 16,
            Guidance = 1.0,
            WarmupSteps = 0,
            Resolution = method == EditMethod.Concat ? 512 : 256,
            ConcatResolution = method == EditMethod.Concat ? "diptych" : null,
            CaptionPrefix = method == EditMethod.Concat ? SeedConcatCaptionPrefix : null,
        };
        var sources = new Dictionary<string, string>
        {
            ["optimizer"] = $"{script}: --optimizer=\"prodigy\"",
            ["lr"] = $"{script}: --learning_rate=1.",
            ["weight-decay"] = "train_influxedit.py:657 --adam_weight_decay default",
            ["betas"] = "train_influxedit.py:644,647 --adam_beta1/2 defaults",
            ["eps"] = "train_influxedit.py:672 --adam_epsilon default",
            ["decouple"] = "train_influxedit.py:656 --prodigy_decouple default",
            ["use-bias-correction"] = "train_influxedit.py:679 --prodigy_use_bias_correction default",
            ["safeguard-warmup"] = "train_influxedit.py:685 --prodigy_safeguard_warmup default",
            ["batch-size"] = $"{script}: --train_batch_size=1",
            ["accumulate"] = $"{script}: --gradient_accumulation_steps=4",
            ["rank"] = $"{script}: --rank=16 (alpha = rank: train_influxedit.py:1727)",
            ["preset"] = "train_influxedit.py:1709-1722 target_modules (gaussian init, :1728)",
            ["guidance"] = $"{script}: --guidance_scale=1",
            ["timestep-sampling"] = "train_influxedit.py:612 --weighting_scheme default none: u ~ U(0, 1)",
            ["loss-weighting"] = "train_influxedit.py:612 --weighting_scheme default none: weight 1",
            ["max-grad-norm"] = "train_influxedit.py:691 --max_grad_norm default",
            ["t5-length"] = "train_influxedit.py:396 --max_sequence_length default",
            ["schedule"] = $"{script}: --lr_scheduler=\"constant\"",
            ["warmup-steps"] = $"{script}: --lr_warmup_steps=0",
            ["resolution"] = method == EditMethod.Concat ? $"{script}: --resolution=512" : $"{script}: --resolution=256",
            ["concat-resolution"] = "train_influxedit.py:161,1227 resize_long_edge: the diptych's long side",
            ["caption-prefix"] = "prep_fill_circles_ds.sh:59 --prefix of prompts_combined",
        };
        return new TrainRecipe(Seed, $"andjoer/InFluxEdit@cf3c914 train_influxedit.py + {script}", values, sources);
    }

    private static TrainRecipe DiffusersRecipe()
    {
        var values = DiffusersDefaults();
        const string file = "train_dreambooth_lora_flux.py";
        var sources = new Dictionary<string, string>
        {
            ["optimizer"] = $"{file} --optimizer default AdamW",
            ["lr"] = $"{file} --learning_rate default",
            ["weight-decay"] = $"{file} --adam_weight_decay default",
            ["betas"] = $"{file} --adam_beta1/2 defaults",
            ["eps"] = $"{file} --adam_epsilon default",
            ["decouple"] = $"{file} --prodigy_decouple default (with --optimizer prodigy)",
            ["use-bias-correction"] = $"{file} --prodigy_use_bias_correction default (with --optimizer prodigy)",
            ["safeguard-warmup"] = $"{file} --prodigy_safeguard_warmup default (with --optimizer prodigy)",
            ["batch-size"] = $"{file} --train_batch_size default",
            ["accumulate"] = $"{file} --gradient_accumulation_steps default",
            ["rank"] = $"{file} --rank default (lora_alpha = rank)",
            ["preset"] = $"{file} target_modules when --lora_layers is not given",
            ["guidance"] = $"{file} --guidance_scale default",
            ["timestep-sampling"] = $"{file} --weighting_scheme default none: u ~ U(0, 1)",
            ["loss-weighting"] = $"{file} --weighting_scheme default none: weight 1",
            ["max-grad-norm"] = $"{file} --max_grad_norm default",
            ["t5-length"] = $"{file} --max_sequence_length default",
            ["schedule"] = $"{file} --lr_scheduler default",
            ["warmup-steps"] = $"{file} --lr_warmup_steps default (a constant schedule ignores it, as get_scheduler does)",
            ["resolution"] = $"{file} --resolution default",
        };
        return new TrainRecipe(Diffusers, $"huggingface/diffusers@5700e52 examples/dreambooth/{file} defaults", values, sources);
    }

    /// <summary>diffusers' train_dreambooth_lora_flux.py argparse defaults, as a request's settings.</summary>
    private static TrainRequest DiffusersDefaults() => new()
    {
        Output = "",
        Optimizer = "adamw",
        LearningRate = 1e-4,
        WeightDecay = 1e-4,
        Betas = "0.9,0.999",
        Eps = 1e-8,
        Decouple = true,
        UseBiasCorrection = true,
        SafeguardWarmup = true,
        BatchSize = 4,
        Accumulate = 1,
        Rank = 4,
        Preset = "diffusers",
        Guidance = 3.5,
        TimestepSampling = "uniform",
        LossWeighting = "none",
        MaxGradNorm = 1.0,
        Text = new TextEncoderSettings { T5Length = 512 },
        Schedule = "constant",
        WarmupSteps = 500,
        Resolution = 512,
    };

    /// <summary>One row of the printed table: the option, the value in effect, and where it came from.</summary>
    public sealed record Row(string Option, string Value, string From);

    /// <summary>
    /// Sets every setting of the recipe that <paramref name="request"/> leaves null, and returns a row per recipe
    /// setting: a value the user gave is kept and marked as theirs.
    /// </summary>
    public (TrainRequest Request, IReadOnlyList<Row> Rows) ApplyTo(TrainRequest request)
    {
        var rows = new List<Row>();
        foreach (var setting in Settings)
        {
            object? value = setting.Get(Values);
            if (value == null) continue;
            object? given = setting.Get(request);
            if (given == null) request = setting.Set(request, value);
            rows.Add(new Row("--" + setting.Option, Format(given ?? value),
                given == null ? Sources[setting.Option] : $"your flag (the recipe's: {Format(value)})"));
        }
        return (request, rows);
    }

    /// <summary>A recipe-able setting: its option's name, and how to read it from and set it in a request.</summary>
    private sealed record Setting(string Option, Func<TrainRequest, object?> Get, Func<TrainRequest, object, TrainRequest> Set);

    /// <summary>Every setting a recipe may fill, in the order the table prints them.</summary>
    private static readonly Setting[] Settings =
    [
        new("optimizer", r => r.Optimizer, (r, v) => r with { Optimizer = (string)v }),
        new("lr", r => r.LearningRate, (r, v) => r with { LearningRate = (double)v }),
        new("weight-decay", r => r.WeightDecay, (r, v) => r with { WeightDecay = (double)v }),
        new("betas", r => r.Betas, (r, v) => r with { Betas = (string)v }),
        new("eps", r => r.Eps, (r, v) => r with { Eps = (double)v }),
        new("decouple", r => r.Decouple, (r, v) => r with { Decouple = (bool)v }),
        new("use-bias-correction", r => r.UseBiasCorrection, (r, v) => r with { UseBiasCorrection = (bool)v }),
        new("safeguard-warmup", r => r.SafeguardWarmup, (r, v) => r with { SafeguardWarmup = (bool)v }),
        new("batch-size", r => r.BatchSize, (r, v) => r with { BatchSize = (int)v }),
        new("accumulate", r => r.Accumulate, (r, v) => r with { Accumulate = (int)v }),
        new("rank", r => r.Rank, (r, v) => r with { Rank = (int)v }),
        new("preset", r => r.Preset, (r, v) => r with { Preset = (string)v }),
        new("guidance", r => r.Guidance, (r, v) => r with { Guidance = (double)v }),
        new("timestep-sampling", r => r.TimestepSampling, (r, v) => r with { TimestepSampling = (string)v }),
        new("loss-weighting", r => r.LossWeighting, (r, v) => r with { LossWeighting = (string)v }),
        new("max-grad-norm", r => r.MaxGradNorm, (r, v) => r with { MaxGradNorm = (double)v }),
        new("t5-length", r => r.Text.T5Length, (r, v) => r with { Text = r.Text with { T5Length = (int)v } }),
        new("schedule", r => r.Schedule, (r, v) => r with { Schedule = (string)v }),
        new("warmup-steps", r => r.WarmupSteps, (r, v) => r with { WarmupSteps = (int)v }),
        new("resolution", r => r.Resolution, (r, v) => r with { Resolution = (TrainingResolutions)v }),
        new("concat-resolution", r => r.ConcatResolution, (r, v) => r with { ConcatResolution = (string)v }),
        new("caption-prefix", r => r.CaptionPrefix, (r, v) => r with { CaptionPrefix = (string)v }),
    ];

    private static string Format(object value) => value switch
    {
        // Quoted when it has spaces (a caption prefix), so its ends show.
        string text => text.Contains(' ') ? $"\"{text}\"" : text,
        bool flag => flag ? "true" : "false",
        double number => OptimizerSettings.Format(number),
        IFormattable number => number.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
