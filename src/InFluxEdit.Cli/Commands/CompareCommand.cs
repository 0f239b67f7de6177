using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("compare", HelpText = "Measure the editing methods on one dataset: trains each variant (--variants) on DATA/train with the same steps, once per seed (--seeds), edits DATA/held-out with each LoRA and with the base model alone, and scores the edits against their targets: PSNR and SSIM of the generated image (concat: the diptych's right half; channel: the whole image), the edit-region PSNR (only the pixels where the target differs from the source by more than 8 of 255 levels), for a circles dataset colour accuracy, and the held-out loss over training. Prints a markdown table of mean ± sample standard deviation (n − 1) over the seeds (also OUTPUT/compare.md), writes the per-seed numbers and loss curves to OUTPUT/compare.json, the held-out loss per variant over the steps (mean over seeds) to OUTPUT/compare-loss.png, and OUTPUT/compare.png (source | target | base | each variant, first seed).")]
public sealed class CompareOptions : TextEncoderOptions
{
    [Option("data", Required = true, HelpText = "A folder with train/ and held-out/ in the layout 'train --data' reads (as 'dataset circles' writes it).")]
    public string Data { get; set; } = "";

    [Option("base", HelpText = "The base transformer checkpoint every variant starts from (e.g. flux1-fill-dev.safetensors on a GPU). Default: --flux-dir's.")]
    public string? Base { get; set; }

    [Option("vae", HelpText = "The autoencoder checkpoint. Default: --flux-dir's ae.safetensors.")]
    public string? Vae { get; set; }

    [Option("output", Required = true, HelpText = "The output folder: VARIANT/seed-S training folders, compare.md, compare.json, compare.png and compare-loss.png.")]
    public string Output { get; set; } = "";

    [Option("variants", Default = "concat,concat+prefix,concat-diptych,concat-diptych+prefix,channel,channel-seed-mask,channel+img-in", HelpText = "Comma-separated, any of: concat (method a, each half at --resolution), concat+prefix (with the seed's diptych caption prefix), concat-diptych (the diptych's long side at --resolution, as the seed sizes it; edited at that size), concat-diptych+prefix (the seed's own concat), channel (method b; img_in frozen, as the seed's code leaves it), channel-seed-mask (trained under an all-zero mask, edited under all-white: the seed's code), channel+img-in (img_in trained in full).")]
    public string Variants { get; set; } = CompareVariants.Names;

    [Option("steps", Default = 300, HelpText = "Training steps of every variant.")]
    public int Steps { get; set; } = 300;

    [Option("seed", Default = 0L, HelpText = "The first seed: run k of every variant trains and edits with seed + k.")]
    public long Seed { get; set; }

    [Option("seeds", Default = 1, HelpText = "Runs of every variant, one per seed; the table gives each metric's mean ± sample standard deviation over them.")]
    public int Seeds { get; set; } = 1;

    [Option("rank", Default = 16, HelpText = "LoRA rank.")]
    public int Rank { get; set; } = 16;

    [Option("lr", HelpText = "Learning rate (default: train's, 1e-4 for AdamW).")]
    public double? LearningRate { get; set; }

    [Option("resolution", Default = 0, HelpText = "Training resolution (0: the training images' own size).")]
    public int Resolution { get; set; }

    [Option("train-guidance", HelpText = "The guidance input while training. Default: 1, as the seed trains FLUX Fill; the guidance a --flux-dir made by pretrain-toy was pretrained with (30).")]
    public double? TrainGuidance { get; set; }

    [Option("edit-steps", Default = 20, HelpText = "Sampling steps of the held-out edits.")]
    public int EditSteps { get; set; } = 20;

    [Option("guidance", Default = 30.0, HelpText = "Distilled guidance of the held-out edits (as 'edit').")]
    public double Guidance { get; set; } = 30.0;

    [Option("sheet-rows", Default = 8, HelpText = "Held-out pairs shown in compare.png.")]
    public int SheetRows { get; set; } = 8;
}

public static class CompareCommand
{
    public static int Run(CompareOptions options) => Run(options, options.CommandOutput, ModelCatalog.All, out _);

    public static int Run(CompareOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog, out CompareResult result) =>
        Run(options, CommandOutput.Plain(log), catalog, out result);

    private static int Run(CompareOptions options, CommandOutput output, IReadOnlyList<CompiledModelInfo> catalog, out CompareResult result)
    {
        var log = output.Log;
        var request = new CompareRequest
        {
            FluxDir = options.FluxDir, Weights = options.Base, Vae = options.Vae, Text = options.TextSettings, Data = options.Data,
            Output = options.Output, Variants = options.Variants, Steps = options.Steps, Seed = options.Seed, Seeds = options.Seeds, Rank = options.Rank,
            LearningRate = options.LearningRate, Resolution = options.Resolution, TrainGuidance = options.TrainGuidance,
            EditSteps = options.EditSteps, Guidance = options.Guidance, SheetRows = options.SheetRows,
        };
        using var backend = options.CreateBackend(log);
        result = MethodComparison.Run(request, backend, log, output.Training, output.Stages, catalog: catalog);
        output.Wrote(options.Output);
        output.Result = result.ToJson(); // as compare.json: per-seed numbers, means and deviations
        return 0;
    }
}
