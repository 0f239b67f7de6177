using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("compare", HelpText = "Measure the editing methods on one dataset: trains (a) concat, (b) channel and (b) channel with --train-img-in on DATA/train with the same steps and seed, edits DATA/held-out with each LoRA and with the base model alone, and scores the edits against their targets: PSNR, SSIM and, for a circles dataset, colour accuracy. Prints a markdown table (also OUTPUT/compare.md) and writes OUTPUT/compare.png (source | target | base | each variant).")]
public sealed class CompareOptions : TextEncoderOptions
{
    [Option("data", Required = true, HelpText = "A folder with train/ and held-out/ in the layout 'train --data' reads (as 'dataset circles' writes it).")]
    public string Data { get; set; } = "";

    [Option("base", HelpText = "The base transformer checkpoint every variant starts from (e.g. flux1-fill-dev.safetensors on a GPU). Default: --flux-dir's.")]
    public string? Base { get; set; }

    [Option("vae", HelpText = "The autoencoder checkpoint. Default: --flux-dir's ae.safetensors.")]
    public string? Vae { get; set; }

    [Option("output", Required = true, HelpText = "The output folder: one training folder per variant, compare.md and compare.png.")]
    public string Output { get; set; } = "";

    [Option("variants", Default = "concat,channel,channel+img-in", HelpText = "Comma-separated: concat, channel, channel+img-in.")]
    public string Variants { get; set; } = "concat,channel,channel+img-in";

    [Option("steps", Default = 300, HelpText = "Training steps of every variant.")]
    public int Steps { get; set; } = 300;

    [Option("seed", Default = 0L, HelpText = "One seed for every variant's training and every edit's noise.")]
    public long Seed { get; set; }

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

    public static int Run(CompareOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog, out IReadOnlyList<MethodComparison.VariantScore> scores) =>
        Run(options, CommandOutput.Plain(log), catalog, out scores);

    private static int Run(CompareOptions options, CommandOutput output, IReadOnlyList<CompiledModelInfo> catalog, out IReadOnlyList<MethodComparison.VariantScore> scores)
    {
        var log = output.Log;
        var request = new CompareRequest
        {
            FluxDir = options.FluxDir, Weights = options.Base, Vae = options.Vae, Text = options.TextSettings, Data = options.Data,
            Output = options.Output, Variants = options.Variants, Steps = options.Steps, Seed = options.Seed, Rank = options.Rank,
            LearningRate = options.LearningRate, Resolution = options.Resolution, TrainGuidance = options.TrainGuidance,
            EditSteps = options.EditSteps, Guidance = options.Guidance, SheetRows = options.SheetRows,
        };
        using var backend = options.CreateBackend(log);
        scores = MethodComparison.Run(request, backend, log, output.Training, output.Stages, catalog: catalog);
        output.Wrote(options.Output);
        output.Result = new { Variants = scores };
        return 0;
    }
}
