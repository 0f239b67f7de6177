using System.Diagnostics;
using System.Globalization;
using System.Text;
using CommandLine;
using InFluxEdit.Cli.Datasets;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Cli.Text;
using InFluxEdit.Cli.Training;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

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
    /// <summary>A trained (or the base) model's edits scored against their targets.</summary>
    public sealed record VariantScore(string Name, double Psnr, double Ssim, double? FillAccuracy, double? BackgroundAccuracy,
        double? BothAccuracy, double TrainSeconds);

    private sealed record Variant(string Name, EditMethod Method, bool TrainImgIn);

    public static int Run(CompareOptions options) => Run(options, System.Console.Out, ModelCatalog.All, out _);

    public static int Run(CompareOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog, out IReadOnlyList<VariantScore> scores)
    {
        var variants = ParseVariants(options.Variants);
        string basePath = options.Base ?? (options.FluxDir != null ? FluxModelFolder.Transformer(options.FluxDir)
            : throw new ArgumentException("--base is required: the transformer every variant starts from (or give --flux-dir)"));
        string vaePath = options.AutoencoderPath(options.Vae);
        string trainDir = Path.Combine(options.Data, "train"), heldOutDir = Path.Combine(options.Data, "held-out");
        var train = PairDataset.FromFolder(trainDir);
        var heldOut = PairDataset.FromFolder(heldOutDir);
        var circles = File.Exists(Path.Combine(heldOutDir, CirclesDataset.MetadataFile))
            ? CirclesDataset.ReadSplit(heldOutDir).ToDictionary(s => s.Name) : null;
        int resolution = options.Resolution > 0 ? options.Resolution : Math.Max(train.Pairs[0].Width, train.Pairs[0].Height);
        Runtime.IO.PathChecks.CreateFolder(options.Output, "--output");

        var loras = new Dictionary<Variant, (string Path, double Seconds)>();
        foreach (var variant in variants)
        {
            log.WriteLine($"== training {variant.Name} ({options.Steps} steps, seed {options.Seed})");
            var trainOptions = TrainOptionsFor(options, variant, basePath, vaePath, trainDir, resolution);
            var clock = Stopwatch.StartNew();
            int code = TrainCommand.Run(trainOptions, log, catalog);
            if (code != 0) throw new InvalidOperationException($"training {variant.Name} failed (exit code {code})");
            loras[variant] = (TrainCommand.LoraPath(trainOptions), clock.Elapsed.TotalSeconds);
        }

        log.WriteLine($"== scoring {heldOut.Pairs.Count} held-out edits per model");
        var results = new List<VariantScore>();
        var columns = new List<List<HostTensor>>();
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(basePath, FillPipeline.TransformerFamily, catalog);
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        using var backend = options.CreateBackend(log);
        var texts = CaptionEncodings.Encode(heldOut.Pairs.Select(p => p.Caption).ToList(), options, transformerInfo.Descriptor,
            Path.Combine(options.Output, "cache", "text"), backend, catalog, log);
        using var vae = LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);

        var scored = new List<(string Name, EditMethod Method, string? Lora, double Seconds)> { ("base (channel, no LoRA)", EditMethod.Channel, null, 0) };
        scored.AddRange(variants.Select(v => (v.Name, v.Method, (string?)loras[v].Path, loras[v].Seconds)));
        foreach (var (name, method, lora, seconds) in scored)
        {
            var deltas = lora == null ? null : EditCommand.ReadLoras([lora], [1f], transformerInfo.Descriptor, log);
            using var transformer = LoadedModel.Load(basePath, transformerInfo, transformerReason, backend, null, deltas?.Deltas, deltas?.Replacements);
            var pipeline = new FillPipeline(transformer.Model, vae.Model);
            var edits = new List<HostTensor>();
            double psnr = 0, ssim = 0;
            var colours = new CirclesDataset.ColourTally();
            foreach (var pair in heldOut.Pairs)
            {
                var source = ImageFile.LoadRgb(pair.SourcePath);
                var target = ImageFile.LoadRgb(pair.TargetPath);
                var edit = pipeline.Edit(new FillEditRequest(source, null, method, texts[pair.Caption], options.EditSteps, options.Guidance,
                    Seed: options.Seed)).Image;
                edits.Add(edit);
                psnr += ImageMetrics.Psnr(edit, target) / heldOut.Pairs.Count;
                ssim += ImageMetrics.Ssim(edit, target) / heldOut.Pairs.Count;
                if (circles != null && circles.TryGetValue(pair.Name, out var sample)) colours.Add(edit, sample);
            }
            double? Share(int right) => circles == null ? null : (double)right / heldOut.Pairs.Count;
            var score = new VariantScore(name, psnr, ssim, Share(colours.Fill), Share(colours.Background), Share(colours.Both), seconds);
            results.Add(score);
            columns.Add(edits);
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: PSNR {psnr:F2} dB, SSIM {ssim:F4}") +
                          (score.BothAccuracy is { } both ? string.Create(CultureInfo.InvariantCulture, $", colours right {both:P0}") : ""));
        }

        string table = Table(results, options, heldOut.Pairs.Count);
        log.WriteLine();
        log.WriteLine(table);
        File.WriteAllText(Path.Combine(options.Output, "compare.md"), table);
        string sheet = Path.Combine(options.Output, "compare.png");
        var rows = heldOut.Pairs.Take(Math.Max(1, options.SheetRows)).Select((pair, i) =>
            ImageGrid.Row(new[] { ImageFile.LoadRgb(pair.SourcePath), ImageFile.LoadRgb(pair.TargetPath) }.Concat(columns.Select(c => c[i])).ToArray()))
            .ToList();
        ImageFile.SaveRgb(ImageGrid.Stack(rows), sheet);
        log.WriteLine($"grid: {sheet} (columns: source | target | {string.Join(" | ", results.Select(r => r.Name))})");
        scores = results;
        return 0;
    }

    private static List<Variant> ParseVariants(string text)
    {
        var variants = new List<Variant>();
        foreach (string name in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            variants.Add(name switch
            {
                "concat" => new Variant(name, EditMethod.Concat, false),
                "channel" => new Variant(name, EditMethod.Channel, false),
                "channel+img-in" => new Variant(name, EditMethod.Channel, true),
                _ => throw new ArgumentException($"unknown variant '{name}' in --variants: use concat, channel and channel+img-in"),
            });
        }
        if (variants.Count == 0) throw new ArgumentException("--variants names no variant");
        if (variants.DistinctBy(v => v.Name).Count() != variants.Count) throw new ArgumentException($"--variants names one variant twice: {text}");
        return variants;
    }

    private static TrainOptions TrainOptionsFor(CompareOptions options, Variant variant, string basePath, string vaePath, string trainDir, int resolution) => new()
    {
        Weights = basePath,
        Vae = vaePath,
        Data = trainDir,
        Method = variant.Method,
        TrainImgIn = variant.TrainImgIn,
        Output = Path.Combine(options.Output, variant.Name),
        Steps = options.Steps,
        Seed = options.Seed,
        Rank = options.Rank,
        LearningRate = options.LearningRate,
        Resolution = resolution,
        CheckpointEvery = options.Steps,
        Guidance = options.TrainingGuidance(options.TrainGuidance),
        Device = options.Device,
        Precision = options.Precision,
        TextEncoderDir = options.TextEncoderDir ?? options.FluxDir,
        Clip = options.Clip,
        T5 = options.T5,
        ClipTokenizer = options.ClipTokenizer,
        T5Tokenizer = options.T5Tokenizer,
        T5Length = options.T5Length,
        TextEmbeddings = options.TextEmbeddings,
    };

    private static string Table(IReadOnlyList<VariantScore> results, CompareOptions options, int heldOut)
    {
        static string Percent(double? value) => value is { } v ? string.Create(CultureInfo.InvariantCulture, $"{v * 100:F0}%") : "—";
        var text = new StringBuilder();
        text.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"{heldOut} held-out edits, {options.Steps} training steps, rank {options.Rank}, seed {options.Seed}, {options.EditSteps} sampling steps"));
        text.AppendLine();
        text.AppendLine("| variant | PSNR (dB) | SSIM | fill colour | background colour | both colours | training time |");
        text.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var r in results)
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Name} | {r.Psnr:F2} | {r.Ssim:F4} | {Percent(r.FillAccuracy)} | {Percent(r.BackgroundAccuracy)} | {Percent(r.BothAccuracy)} | {(r.TrainSeconds > 0 ? $"{r.TrainSeconds:F0} s" : "—")} |"));
        return text.ToString();
    }
}
