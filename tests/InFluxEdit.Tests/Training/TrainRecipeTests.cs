using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Training;
using InFluxEdit.Models;
using InFluxEdit.Runtime.SafeTensors;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// --recipe seed and --recipe diffusers against the scripts they follow: the expected values below were read off the
/// scripts by hand (file and line cited), not off the recipe's code.
/// </summary>
public class TrainRecipeTests
{
    /// <summary>
    /// andjoer/InFluxEdit at cf3c914. Channel: train_circles_edit.sh; concat: train_circles_combined.sh; the rest
    /// train_influxedit.py's argparse defaults, which the scripts do not override.
    /// </summary>
    [Theory]
    [InlineData(EditMethod.Channel)]
    [InlineData(EditMethod.Concat)]
    public void TheSeedRecipeIsTheSeedScriptsSettings(EditMethod method)
    {
        var values = TrainRecipe.For("seed", method).Values;
        bool concat = method == EditMethod.Concat;
        values.Optimizer.ShouldBe("prodigy");             // train_circles_*.sh: --optimizer="prodigy"
        values.LearningRate.ShouldBe(1.0);                // train_circles_*.sh: --learning_rate=1.
        values.WeightDecay.ShouldBe(1e-4);                // train_influxedit.py:657 --adam_weight_decay default=1e-04
        values.Betas.ShouldBe("0.9,0.999");               // train_influxedit.py:644,647 --adam_beta1 0.9, --adam_beta2 0.999
        values.Eps.ShouldBe(1e-8);                        // train_influxedit.py:672-674 --adam_epsilon default=1e-08
        values.Beta3.ShouldBeNull();                      // train_influxedit.py:650-652 --prodigy_beta3 default=None (√beta2)
        values.Decouple.ShouldBe(true);                   // train_influxedit.py:656 --prodigy_decouple default=True
        values.UseBiasCorrection.ShouldBe(true);          // train_influxedit.py:679-682 --prodigy_use_bias_correction default=True
        values.SafeguardWarmup.ShouldBe(true);            // train_influxedit.py:685-688 --prodigy_safeguard_warmup default=True
        values.DCoef.ShouldBeNull();                      // train_influxedit.py:1950-1958 passes no d_coef: prodigyopt's 1.0
        values.GrowthRate.ShouldBeNull();                 // nor growth_rate: unlimited
        values.BatchSize.ShouldBe(1);                     // train_circles_*.sh: --train_batch_size=1
        values.Accumulate.ShouldBe(4);                    // train_circles_*.sh: --gradient_accumulation_steps=4
        values.Rank.ShouldBe(16);                         // train_circles_*.sh: --rank=16
        values.Alpha.ShouldBeNull();                      // train_influxedit.py:1727 lora_alpha=args.rank: alpha follows the rank
        values.Preset.ShouldBe("diffusers");              // train_influxedit.py:1709-1722 attn.to_q/k/v, to_out.0, add_*_proj, to_add_out, ff(_context).net.0.proj/.2
        values.Guidance.ShouldBe(1.0);                    // train_circles_*.sh: --guidance_scale=1
        values.TimestepSampling.ShouldBe("uniform");      // train_influxedit.py:612-616 --weighting_scheme default="none": u = torch.rand
        values.LossWeighting.ShouldBe("none");            // and weighting = 1 (compute_loss_weighting_for_sd3, :2387)
        values.MaxGradNorm.ShouldBe(1.0);                 // train_influxedit.py:691 --max_grad_norm default=1.0
        values.Text.T5Length.ShouldBe(512);               // train_influxedit.py:396-400 --max_sequence_length default=512
        values.Schedule.ShouldBe("constant");             // train_circles_*.sh: --lr_scheduler="constant"
        values.WarmupSteps.ShouldBe(0);                   // train_circles_*.sh: --lr_warmup_steps=0
        values.Resolution.ShouldBe(concat ? 512 : 256);   // train_circles_combined.sh: --resolution=512; train_circles_edit.sh: --resolution=256
        // train_influxedit.py:161-170,1227: resize_long_edge(image, target_size) on the whole diptych.
        values.ConcatResolution.ShouldBe(concat ? "diptych" : null);
        // prep_fill_circles_ds.sh:59: --prefix of the prompts_combined captions, typo included.
        values.CaptionPrefix.ShouldBe(concat ? "Before and after image. On the left half a cricle and on the right side the very same circle like this: " : null);
    }

    /// <summary>huggingface/diffusers examples/dreambooth/train_dreambooth_lora_flux.py at 5700e52: its argparse defaults.</summary>
    [Fact]
    public void TheDiffusersRecipeIsTheScriptsDefaults()
    {
        var values = TrainRecipe.For("diffusers", EditMethod.Channel).Values;
        values.Optimizer.ShouldBe("adamw");               // --optimizer default="AdamW"
        values.LearningRate.ShouldBe(1e-4);               // --learning_rate default=1e-4
        values.WeightDecay.ShouldBe(1e-4);                // --adam_weight_decay default=1e-04
        values.Betas.ShouldBe("0.9,0.999");               // --adam_beta1 0.9, --adam_beta2 0.999
        values.Eps.ShouldBe(1e-8);                        // --adam_epsilon default=1e-08
        values.Decouple.ShouldBe(true);                   // --prodigy_decouple default=True
        values.UseBiasCorrection.ShouldBe(true);          // --prodigy_use_bias_correction default=True
        values.SafeguardWarmup.ShouldBe(true);            // --prodigy_safeguard_warmup default=True
        values.BatchSize.ShouldBe(4);                     // --train_batch_size default=4
        values.Accumulate.ShouldBe(1);                    // --gradient_accumulation_steps default=1
        values.Rank.ShouldBe(4);                          // --rank default=4 (lora_alpha=args.rank)
        values.Preset.ShouldBe("diffusers");              // target_modules without --lora_layers
        values.Guidance.ShouldBe(3.5);                    // --guidance_scale default=3.5
        values.TimestepSampling.ShouldBe("uniform");      // --weighting_scheme default="none": uniform u
        values.LossWeighting.ShouldBe("none");            // and no loss weight
        values.MaxGradNorm.ShouldBe(1.0);                 // --max_grad_norm default=1.0
        values.Text.T5Length.ShouldBe(512);               // --max_sequence_length default=512
        values.Schedule.ShouldBe("constant");             // --lr_scheduler default="constant"
        values.WarmupSteps.ShouldBe(500);                 // --lr_warmup_steps default=500 (constant ignores it)
        values.Resolution.ShouldBe(512);                  // --resolution default=512
        values.ConcatResolution.ShouldBeNull();
        values.CaptionPrefix.ShouldBeNull();
    }

    [Fact]
    public void AnUnknownRecipeNamesTheKnownOnes() =>
        Should.Throw<ArgumentException>(() => TrainRecipe.For("kohya", EditMethod.Channel)).Message.ShouldContain("use seed");

    [Fact]
    public void TrainWithTheSeedRecipePrintsItsTableAndRunsWithItsSettingsAndYourFlags()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Concat, 2);
        options.Recipe = "seed";
        options.LearningRate = null;
        options.Rank = 4;           // flags win over the recipe
        options.Resolution = "64";
        var log = new StringWriter();

        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0);

        string text = log.ToString();
        text.ShouldContain("recipe seed: andjoer/InFluxEdit@cf3c914 train_influxedit.py + train_circles_combined.sh");
        text.ShouldContain("| --optimizer ");
        text.ShouldContain("train_circles_combined.sh: --gradient_accumulation_steps=4");
        text.ShouldContain("your flag (the recipe's: 16)");
        text.ShouldContain("your flag (the recipe's: 512)");
        text.ShouldContain("optimizer: prodigy (betas 0.9, 0.999, eps 1e-8, weight decay 1e-4 (decoupled), beta3 √beta2, bias correction on, safeguard warm-up on");
        text.ShouldContain("adapters of rank 4, alpha 4");

        // The run used them: the checkpoint records the optimiser's settings and the batches.
        using var checkpoint = SafeTensorsFile.Open(dir.File("out/checkpoint-000002.safetensors"));
        checkpoint.Metadata["optimizer"].ShouldBe("prodigy");
        checkpoint.Metadata["extra.accumulate"].ShouldBe("4");
        checkpoint.Metadata["extra.batch_size"].ShouldBe("1");
        var scalars = Runtime.Training.TrainingCheckpoint.Load(dir.File("out/checkpoint-000002.safetensors")).Optimizer.Scalars;
        scalars["hp.weight_decay"].ShouldBe(1e-4);
        scalars["hp.use_bias_correction"].ShouldBe(1);
        scalars["hp.safeguard_warmup"].ShouldBe(1);
        scalars["hp.decouple"].ShouldBe(1);
        // The diptych's long side is the resolution: 2·64 × 48 halves → 64 × 24 → each half 32 × 24, sides down to 16s.
        Directory.GetFiles(dir.File("out/cache"), "pair.concat.32x16.*.safetensors").Length.ShouldBe(1);
    }

    [Fact]
    public void AResumeWithOtherOptimizerFlagsIsRefused()
    {
        using var dir = new TempDir();
        var first = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 2);
        first.Optimizer = "prodigy";
        first.LearningRate = 1.0;
        TrainCommand.Run(first, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        var resumed = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 4);
        resumed.Optimizer = "prodigy";
        resumed.LearningRate = 1.0;
        resumed.UseBiasCorrection = false;
        resumed.Resume = dir.File("out/checkpoint-000002.safetensors");
        Should.Throw<InvalidDataException>(() => TrainCommand.Run(resumed, TextWriter.Null, ModelCatalog.All))
            .Message.ShouldContain("use_bias_correction");
    }

    [Theory]
    [InlineData("--betas", "0.9")]
    [InlineData("--betas", "0.9,1.5")]
    [InlineData("--eps", "0")]
    [InlineData("--weight-decay", "-1")]
    [InlineData("--d-coef", "0")]
    [InlineData("--growth-rate", "0.5")]
    [InlineData("--batch-size", "0")]
    public void AnOptimizerOrBatchFlagOutOfRangeIsNamed(string option, string value)
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 1);
        double number = double.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out double parsed) ? parsed : double.NaN;
        switch (option)
        {
            case "--betas": options.Betas = value; break;
            case "--eps": options.Eps = number; break;
            case "--weight-decay": options.WeightDecay = number; break;
            case "--d-coef": options.DCoef = number; break;
            case "--growth-rate": options.GrowthRate = number; break;
            case "--batch-size": options.BatchSize = (int)number; break;
        }
        Should.Throw<ArgumentException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message.ShouldStartWith(option);
    }
}
