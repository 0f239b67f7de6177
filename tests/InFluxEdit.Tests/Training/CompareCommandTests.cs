using System.Text.Json.Nodes;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Datasets;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Fill;
using InFluxEdit.Text;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>A shortened compare on the golden tiny models: variants train per seed, edit, are scored and summarised.</summary>
public class CompareCommandTests
{
    /// <summary>The packed mask's features of every conditioning token (img_cond is [1, L, 64 latent + 256 mask]).</summary>
    private static float[] MaskFeatures(HostTensor imgCond) => FillGolden.Features(imgCond, 64, imgCond.Shape[2] - 64).Data;

    private static CompareOptions Options(TempDir dir, string data, string variants, int seeds) => new()
    {
        Data = data,
        Base = TestPaths.Golden("flux-tiny.safetensors"),
        Vae = TestPaths.Golden("vae-tiny.safetensors"),
        TextEmbeddings = FillGolden.WriteTextEmbeddings(dir),
        Output = dir.File("compare"),
        Variants = variants,
        Seeds = seeds,
        Seed = 5,
        Steps = 2,
        Rank = 2,
        EditSteps = 2,
        Device = "cpu",
    };

    private static string Circles(TempDir dir)
    {
        string data = dir.File("circles");
        DatasetCommand.Run(new DatasetOptions { Kind = "circles", Output = data, Count = 2, HeldOut = 2, Size = 32, Seed = 4 }).ShouldBe(0);
        return data;
    }

    [Fact]
    public void Compare_runs_every_variant_per_seed_and_reports_the_mean_and_sample_std_of_the_per_seed_numbers()
    {
        using var dir = new TempDir();
        var options = Options(dir, Circles(dir), "concat-diptych+prefix,channel-seed-mask", seeds: 2);
        var log = new StringWriter();

        CompareCommand.Run(options, log, ModelCatalog.All, out var result).ShouldBe(0, log.ToString());

        result.Variants.Select(v => v.Name).ShouldBe([MethodComparison.BaseName, "concat-diptych+prefix", "channel-seed-mask"]);
        foreach (string variant in new[] { "concat-diptych+prefix", "channel-seed-mask" })
            foreach (int seed in new[] { 5, 6 })
                Directory.EnumerateFiles(Path.Combine(options.Output, variant, $"seed-{seed}"), "lora-*.safetensors").ShouldHaveSingleItem($"{variant} seed {seed}");

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(options.Output, "compare.json")))!.AsObject();
        json["steps"]!.GetValue<int>().ShouldBe(2);
        json["held_out"]!.GetValue<int>().ShouldBe(2);
        var variants = json["variants"]!.AsArray();
        variants.Select(v => v!["name"]!.GetValue<string>()).ShouldBe(result.Variants.Select(v => v.Name));
        foreach (var variant in variants)
        {
            string name = variant!["name"]!.GetValue<string>();
            var seeds = variant["seeds"]!.AsArray();
            seeds.Select(s => s!["seed"]!.GetValue<long>()).ShouldBe([5L, 6L], name);
            foreach (string metric in new[] { "psnr", "edit_region_psnr", "ssim", "fill_colour", "background_colour", "both_colours" })
            {
                // The mean and the sample standard deviation (n − 1), computed here from the per-seed numbers written.
                double a = seeds[0]![metric]!.GetValue<double>(), b = seeds[1]![metric]!.GetValue<double>();
                double mean = (a + b) / 2, std = Math.Sqrt(((a - mean) * (a - mean) + (b - mean) * (b - mean)) / (2 - 1));
                variant["mean"]![metric]!.GetValue<double>().ShouldBe(mean, 1e-12, $"{name} {metric}");
                variant["std"]![metric]!.GetValue<double>().ShouldBe(std, 1e-12, $"{name} {metric}");
            }
            bool trained = name != MethodComparison.BaseName;
            if (trained) variant["plot_colour"]!.GetValue<string>().ShouldStartWith(CompareVariants.All.Single(v => v.Name == name).Colour + " #");
            else variant["plot_colour"].ShouldBeNull();
            foreach (var seed in seeds)
            {
                var curve = seed!["validation_loss"]!.AsArray();
                if (!trained)
                {
                    curve.ShouldBeEmpty();
                    continue;
                }
                curve.Select(p => p![0]!.GetValue<int>()).ShouldBe([0, 1, 2], name);
                curve.ShouldAllBe(p => double.IsFinite(p![1]!.GetValue<double>()) && p[1]!.GetValue<double>() > 0);
                seed["final_validation_loss"]!.GetValue<double>().ShouldBe(curve[^1]![1]!.GetValue<double>());
            }
        }

        string table = File.ReadAllText(Path.Combine(options.Output, "compare.md"));
        table.ShouldContain("| channel-seed-mask |");
        table.ShouldContain(" ± ");
        var plot = ImageFile.LoadRgb(Path.Combine(options.Output, "compare-loss.png"));
        plot.Shape.ShouldBe([1, 3, 500, 800]);
        File.Exists(Path.Combine(options.Output, "compare.png")).ShouldBeTrue();
    }

    [Fact]
    public void The_seed_mask_variant_trains_under_an_all_zero_mask_and_edits_under_an_all_white_one()
    {
        using var dir = new TempDir();
        var options = Options(dir, Circles(dir), "channel-seed-mask", seeds: 1);
        var variant = CompareVariants.Parse("channel-seed-mask").ShouldHaveSingleItem();
        using var backend = new CpuBackend();
        var request = MethodComparison.TrainRequestFor(new CompareRequest { Output = options.Output, Steps = 1, Rank = 2, Text = options.TextSettings },
            variant, 5, options.Base!, options.Vae!, Path.Combine(options.Data, "train"), Path.Combine(options.Data, "held-out"), 32);

        LoraTraining.Train(request, backend, catalog: ModelCatalog.All);

        // What the trainer read: every training pair's conditioning carries a mask of zeros...
        string cache = Path.Combine(request.Output, "cache");
        var trained = Directory.GetFiles(cache, "*.safetensors");
        trained.Length.ShouldBe(2);
        foreach (string file in trained)
        {
            using var latents = SafeTensorsFile.Open(file);
            MaskFeatures(latents.ReadFloat32("img_cond")).ShouldAllBe(v => v == 0f, file);
        }
        // ...while its held-out loss and its edits pose the task as inference does, under all white.
        foreach (string file in Directory.GetFiles(Path.Combine(cache, "validation"), "*.safetensors"))
        {
            using var latents = SafeTensorsFile.Open(file);
            MaskFeatures(latents.ReadFloat32("img_cond")).ShouldAllBe(v => v == 1f, file);
        }
        using var transformer = LoadedModel.Load(options.Base!, FillPipeline.TransformerFamily, backend, ModelCatalog.All);
        using var vae = LoadedModel.Load(options.Vae!, VaeCodec.Family, backend, ModelCatalog.All);
        var source = ImageFile.LoadRgb(Directory.GetFiles(Path.Combine(options.Data, "held-out", "source"))[0]);
        var text = new TextConditioning(FillGolden.Read("fill-tiny-case.safetensors", "txt"), FillGolden.Read("fill-tiny-case.safetensors", "vec"));
        var edit = MethodComparison.EditAtTrainingSize(new FillPipeline(transformer.Model, vae.Model), variant, new AspectBuckets(32), source, text,
            new CompareRequest { EditSteps = 1 }, 5);
        MaskFeatures(edit.ImgCond).ShouldAllBe(v => v == 1f);
    }

    [Theory]
    [InlineData("channel,sideways", "unknown variant 'sideways'")]
    [InlineData("channel,channel", "names 'channel' twice")]
    [InlineData(" , ", "names no variant")]
    public void A_bad_variant_list_is_refused_before_any_training_with_the_valid_names(string variants, string expected)
    {
        var error = Should.Throw<ArgumentException>(() => CompareCommand.Run(
            new CompareOptions { Data = "unused", Base = "unused", Vae = "unused", Output = "unused", Variants = variants },
            TextWriter.Null, ModelCatalog.All, out _));
        error.Message.ShouldContain(expected);
        if (!expected.Contains("twice"))
            foreach (var variant in CompareVariants.All) error.Message.ShouldContain(variant.Name);
    }

    [Fact]
    public void Fewer_than_one_seed_is_refused_before_any_training()
    {
        var error = Should.Throw<ArgumentException>(() => CompareCommand.Run(
            new CompareOptions { Data = "unused", Base = "unused", Vae = "unused", Output = "unused", Seeds = 0 }, TextWriter.Null, ModelCatalog.All, out _));
        error.Message.ShouldBe("--seeds must be at least 1; got 0");
    }

    [Fact]
    public void Summaries_skip_missing_values_and_give_no_deviation_for_one_seed()
    {
        CompareResult.Summarize([2.0, null, 4.0, double.NaN]).ShouldBe((3.0, Math.Sqrt(2.0), 2));
        CompareResult.Summarize([7.0]).ShouldBe((7.0, null, 1));
        CompareResult.Summarize([null]).ShouldBe((null, null, 0));
    }
}
