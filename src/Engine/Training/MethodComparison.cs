using System.Globalization;
using System.Text;
using InFluxEdit.Datasets;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Text;

namespace InFluxEdit.Training;

/// <summary>
/// What <see cref="MethodComparison.Run"/> trains and scores (the options of `influx-cli compare`); every variant starts
/// from <see cref="ModelSelection.Weights"/> (the base), else the model folder's transformer.
/// </summary>
public sealed record CompareRequest : ModelSelection
{
    /// <summary>A folder with train/ and held-out/ in the layout training reads.</summary>
    public string Data { get; init; } = "";

    /// <summary>One training folder per variant, compare.md and compare.png.</summary>
    public string Output { get; init; } = "";

    /// <summary>Comma-separated: concat, channel, channel+img-in.</summary>
    public string Variants { get; init; } = "concat,channel,channel+img-in";
    public int Steps { get; init; } = 300;
    public long Seed { get; init; }
    public int Rank { get; init; } = 16;
    public double? LearningRate { get; init; }

    /// <summary>Training resolution (0: the training images' own size).</summary>
    public int Resolution { get; init; }
    public double? TrainGuidance { get; init; }
    public int EditSteps { get; init; } = 20;
    public double Guidance { get; init; } = 30.0;
    public int SheetRows { get; init; } = 8;
}

/// <summary>The editing methods measured on one dataset: each variant's LoRA and the base alone, scored on held-out edits.</summary>
public static class MethodComparison
{
    /// <summary>A trained (or the base) model's edits scored against their targets.</summary>
    public sealed record VariantScore(string Name, double Psnr, double Ssim, double? FillAccuracy, double? BackgroundAccuracy,
        double? BothAccuracy, double TrainSeconds);

    private sealed record Variant(string Name, EditMethod Method, bool TrainImgIn);

    /// <summary>
    /// Trains each variant of <paramref name="options"/> on DATA/train with one seed and steps, edits DATA/held-out with
    /// each LoRA and with the base alone, scores the edits and writes OUTPUT/compare.md and OUTPUT/compare.png.
    /// </summary>
    /// <param name="log">Each stage, each variant's score and the markdown table.</param>
    public static IReadOnlyList<VariantScore> Run(CompareRequest options, IBackend backend, TextWriter? log = null, IProgress<TrainProgress>? progress = null,
        IProgress<StageProgress>? stages = null, CancellationToken cancellation = default, IReadOnlyList<CompiledModelInfo>? catalog = null)
    {
        log ??= TextWriter.Null;
        catalog ??= ModelCatalog.All;
        var variants = ParseVariants(options.Variants);
        string basePath = options.Weights ?? (options.FluxDir != null ? FluxModelFolder.Transformer(options.FluxDir)
            : throw new ArgumentException("--base is required: the transformer every variant starts from (or give --flux-dir)"));
        string vaePath = options.AutoencoderPath;
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
            var trained = LoraTraining.Train(TrainRequestFor(options, variant, basePath, vaePath, trainDir, resolution), backend, log, progress, stages,
                cancellation, catalog);
            loras[variant] = (trained.LoraPath!, trained.Elapsed.TotalSeconds);
        }

        log.WriteLine($"== scoring {heldOut.Pairs.Count} held-out edits per model");
        var results = new List<VariantScore>();
        var columns = new List<List<HostTensor>>();
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(basePath, FillPipeline.TransformerFamily, catalog);
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        var texts = CaptionEncodings.Encode(heldOut.Pairs.Select(p => p.Caption).ToList(), options.TextInEffect, transformerInfo.Descriptor,
            Path.Combine(options.Output, "cache", "text"), backend, catalog, log, stages);
        using var vae = LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);

        var scored = new List<(string Name, EditMethod Method, string? Lora, double Seconds)> { ("base (channel, no LoRA)", EditMethod.Channel, null, 0) };
        scored.AddRange(variants.Select(v => (v.Name, v.Method, (string?)loras[v].Path, loras[v].Seconds)));
        foreach (var (name, method, lora, seconds) in scored)
        {
            var deltas = lora == null ? null : LoraMerge.Read([new LoraFile(lora)], transformerInfo.Descriptor, log, baseWeights: LoraSet.BaseWeightsOf(basePath));
            using var transformer = LoadedModel.Load(basePath, transformerInfo, transformerReason, backend, null, deltas);
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
        return results;
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

    private static TrainRequest TrainRequestFor(CompareRequest options, Variant variant, string basePath, string vaePath, string trainDir, int resolution) => new()
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
        Guidance = FluxModelFolder.TrainingGuidance(options.FluxDir, options.TrainGuidance),
        Text = options.TextInEffect,
    };

    private static string Table(IReadOnlyList<VariantScore> results, CompareRequest options, int heldOut)
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
