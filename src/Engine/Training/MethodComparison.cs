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

    /// <summary>VARIANT/seed-S training folders, compare.md, compare.json, compare.png and compare-loss.png.</summary>
    public string Output { get; init; } = "";

    /// <summary>Comma-separated names of <see cref="CompareVariants.All"/>.</summary>
    public string Variants { get; init; } = CompareVariants.Names;
    public int Steps { get; init; } = 300;

    /// <summary>The first seed; <see cref="Seeds"/> runs use Seed, Seed + 1, ….</summary>
    public long Seed { get; init; }

    /// <summary>Runs of every variant, each with its own seed (training and the edits' noise).</summary>
    public int Seeds { get; init; } = 1;
    public int Rank { get; init; } = 16;
    public double? LearningRate { get; init; }

    /// <summary>Training resolution (0: the training images' own size).</summary>
    public int Resolution { get; init; }
    public double? TrainGuidance { get; init; }
    public int EditSteps { get; init; } = 20;
    public double Guidance { get; init; } = 30.0;
    public int SheetRows { get; init; } = 8;
}

/// <summary>
/// The editing methods measured on one dataset: each variant trained with each seed, and the base alone, edit the
/// held-out pairs; the edits are scored and the scores summarised over the seeds.
/// </summary>
public static class MethodComparison
{
    /// <summary>Loss-curve points per run: the held-out loss is measured about this many times.</summary>
    private const int LossPoints = 20;

    /// <summary>
    /// Trains each variant with each seed on DATA/train, edits DATA/held-out with each LoRA and with the base alone
    /// (each seed's edits from that seed's noise), and writes OUTPUT/compare.md, compare.json, compare.png (the first
    /// seed's edits) and compare-loss.png.
    /// </summary>
    /// <param name="log">Each stage, each model's scores and the markdown table.</param>
    public static CompareResult Run(CompareRequest options, IBackend backend, TextWriter? log = null, IProgress<TrainProgress>? progress = null,
        IProgress<StageProgress>? stages = null, CancellationToken cancellation = default, IReadOnlyList<CompiledModelInfo>? catalog = null)
    {
        log ??= TextWriter.Null;
        catalog ??= ModelCatalog.All;
        var variants = CompareVariants.Parse(options.Variants);
        if (options.Seeds < 1) throw new ArgumentException($"--seeds must be at least 1; got {options.Seeds}");
        if (options.Steps < 1) throw new ArgumentException($"--steps must be at least 1; got {options.Steps}");
        string basePath = options.Weights ?? (options.FluxDir != null ? FluxModelFolder.Transformer(options.FluxDir)
            : throw new ArgumentException("--base is required: the transformer every variant starts from (or give --flux-dir)"));
        string vaePath = options.AutoencoderPath;
        string trainDir = Path.Combine(options.Data, "train"), heldOutDir = Path.Combine(options.Data, "held-out");
        var train = PairDataset.FromFolder(trainDir);
        var heldOut = PairDataset.FromFolder(heldOutDir);
        var circles = File.Exists(Path.Combine(heldOutDir, CirclesDataset.MetadataFile))
            ? CirclesDataset.ReadSplit(heldOutDir).ToDictionary(s => s.Name) : null;
        int resolution = options.Resolution > 0 ? options.Resolution : Math.Max(train.Pairs[0].Width, train.Pairs[0].Height);
        var buckets = new AspectBuckets(resolution);
        var seeds = Enumerable.Range(0, options.Seeds).Select(i => options.Seed + i).ToList();
        Runtime.IO.PathChecks.CreateFolder(options.Output, "--output");

        var runs = new Dictionary<(CompareVariant, long), TrainResult>();
        foreach (long seed in seeds)
            foreach (var variant in variants)
            {
                log.WriteLine($"== training {variant.Name} ({options.Steps} steps, seed {seed})");
                runs[(variant, seed)] = LoraTraining.Train(TrainRequestFor(options, variant, seed, basePath, vaePath, trainDir, heldOutDir, resolution),
                    backend, log, progress, stages, cancellation, catalog);
            }

        log.WriteLine($"== scoring {heldOut.Pairs.Count} held-out edits per model and seed");
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(basePath, FillPipeline.TransformerFamily, catalog);
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        var prefixes = variants.Select(v => v.CaptionPrefix ?? "").Append("").Distinct().ToList();
        var texts = CaptionEncodings.Encode(prefixes.SelectMany(prefix => heldOut.Pairs.Select(p => prefix + p.Caption)).Distinct().ToList(),
            options.TextInEffect, transformerInfo.Descriptor, Path.Combine(options.Output, "cache", "text"), backend, catalog, log, stages);
        using var vae = LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend);
        var pairs = heldOut.Pairs.Select(p => (Pair: p, Source: ImageFile.LoadRgb(p.SourcePath), Target: ImageFile.LoadRgb(p.TargetPath))).ToList();

        var results = new List<VariantResult>();
        var columns = new List<List<HostTensor>>();
        foreach (var variant in variants.Prepend(null))
        {
            var scores = new List<SeedScore>();
            foreach (long seed in seeds)
            {
                cancellation.ThrowIfCancellationRequested();
                var run = variant == null ? null : runs[(variant, seed)];
                var deltas = run == null ? null
                    : LoraMerge.Read([new LoraFile(run.LoraPath!)], transformerInfo.Descriptor, log, baseWeights: LoraSet.BaseWeightsOf(basePath));
                using var transformer = LoadedModel.Load(basePath, transformerInfo, transformerReason, backend, null, deltas);
                var pipeline = new FillPipeline(transformer.Model, vae.Model);
                var edits = pairs.Select(p => EditAtTrainingSize(pipeline, variant, buckets, p.Source,
                    texts[(variant?.CaptionPrefix ?? "") + p.Pair.Caption], options, seed).Image).ToList();
                scores.Add(Score(seed, edits, pairs.Select(p => (p.Pair.Name, p.Source, p.Target)).ToList(), circles, run));
                if (seed == seeds[0]) columns.Add(edits);
                log.WriteLine($"{variant?.Name ?? BaseName} seed {seed}: " + string.Join(", ", CompareResult.Metrics
                    .Select(m => (m, value: m.Read(scores[^1]))).Where(x => x.value != null)
                    .Select(x => $"{x.m.Title} {x.value!.Value.ToString(x.m.Format == "F0" && x.m.Percent ? "P0" : x.m.Format, CultureInfo.InvariantCulture)}")));
            }
            results.Add(new VariantResult(variant?.Name ?? BaseName, variant, scores));
        }

        var result = new CompareResult(results, options.Steps, heldOut.Pairs.Count, options.Rank, resolution, options.EditSteps, options.Guidance);
        WriteOutputs(result, options, pairs.Select(p => (p.Source, p.Target)).ToList(), columns, log);
        return result;
    }

    public const string BaseName = "base (channel, no LoRA)";

    /// <summary>
    /// The variant's (null: the base's) edit of <paramref name="source"/> at the size it trained at (its bucket, the
    /// diptych's half for <see cref="CompareVariant.DiptychResolution"/>), scaled back to the source's size for scoring.
    /// Channel edits use the all-white mask whatever the variant trained under, as the seed's inference does.
    /// </summary>
    public static FillEditResult EditAtTrainingSize(FillPipeline pipeline, CompareVariant? variant, AspectBuckets buckets, HostTensor source,
        TextConditioning text, CompareRequest options, long seed)
    {
        int height = source.Shape[2], width = source.Shape[3];
        var bucket = variant?.DiptychResolution == true ? buckets.DiptychHalf(width, height) : buckets.Assign(width, height);
        bool resized = bucket.Width != width || bucket.Height != height;
        var input = resized ? Resample.Bicubic(source, bucket.Height, bucket.Width) : source;
        var edit = pipeline.Edit(new FillEditRequest(input, null, variant?.Method ?? EditMethod.Channel, text, options.EditSteps, options.Guidance, Seed: seed));
        return resized ? edit with { Image = Resample.Bicubic(edit.Image, height, width) } : edit;
    }

    private static SeedScore Score(long seed, IReadOnlyList<HostTensor> edits, IReadOnlyList<(string Name, HostTensor Source, HostTensor Target)> pairs,
        IReadOnlyDictionary<string, CircleSample>? circles, TrainResult? run)
    {
        double psnr = 0, ssim = 0;
        var regionPsnr = new List<double>();
        var colours = new CirclesDataset.ColourTally();
        for (int i = 0; i < pairs.Count; i++)
        {
            var (name, source, target) = pairs[i];
            psnr += ImageMetrics.Psnr(edits[i], target) / pairs.Count;
            ssim += ImageMetrics.Ssim(edits[i], target) / pairs.Count;
            if (ImageMetrics.Psnr(edits[i], target, ImageMetrics.ChangedPixels(source, target)) is { } changed) regionPsnr.Add(changed);
            if (circles != null && circles.TryGetValue(name, out var sample)) colours.Add(edits[i], sample);
        }
        double? Share(int right) => circles == null ? null : (double)right / pairs.Count;
        return new SeedScore(seed, psnr, regionPsnr.Count > 0 ? regionPsnr.Average() : null, ssim, Share(colours.Fill), Share(colours.Background),
            Share(colours.Both), run?.Elapsed.TotalSeconds ?? 0, run?.ValidationLosses ?? []);
    }

    private static void WriteOutputs(CompareResult result, CompareRequest options, IReadOnlyList<(HostTensor Source, HostTensor Target)> pairs,
        IReadOnlyList<List<HostTensor>> columns, TextWriter log)
    {
        string table = result.Table();
        log.WriteLine();
        log.WriteLine(table);
        Runtime.IO.AtomicFile.Write(Path.Combine(options.Output, "compare.md"), stream => stream.Write(Encoding.UTF8.GetBytes(table)));
        result.WriteJson(Path.Combine(options.Output, "compare.json"));
        string sheet = Path.Combine(options.Output, "compare.png");
        var rows = pairs.Take(Math.Max(1, options.SheetRows)).Select((pair, i) =>
            ImageGrid.Row(new[] { pair.Source, pair.Target }.Concat(columns.Select(c => c[i])).ToArray())).ToList();
        ImageFile.SaveRgb(ImageGrid.Stack(rows), sheet);
        log.WriteLine($"grid: {sheet} (seed {result.Variants[0].Seeds[0].Seed}; columns: source | target | {string.Join(" | ", result.Variants.Select(r => r.Name))})");
        string plot = Path.Combine(options.Output, "compare-loss.png");
        var axes = result.WriteLossPlot(plot);
        log.WriteLine(FormattableString.Invariant(
            $"loss plot: {plot} (held-out loss, mean over seeds; x: steps {axes.XMin:F0} to {axes.XMax:F0}, y: {axes.YMin:F4} to {axes.YMax:F4}, {(axes.LogY ? "log" : "linear")} scale; ") +
            "legend swatches top-right in this order: " + string.Join(", ", result.Variants.Where(r => r.Variant != null).Select(r => $"{r.Name} {r.Variant!.Colour}")) + ")");
        log.WriteLine($"per-seed scores: {Path.Combine(options.Output, "compare.json")}");
    }

    /// <summary>The training run of one variant and seed: the held-out loss measured about <see cref="LossPoints"/> times, no validation edits.</summary>
    public static TrainRequest TrainRequestFor(CompareRequest options, CompareVariant variant, long seed, string basePath, string vaePath, string trainDir,
        string heldOutDir, int resolution) => new()
    {
        Weights = basePath,
        Vae = vaePath,
        Data = trainDir,
        Method = variant.Method,
        TrainImgIn = variant.TrainImgIn,
        SeedZeroMask = variant.SeedZeroMask,
        SeedFrozenImgIn = variant.SeedFrozenImgIn,
        ConcatResolution = variant.DiptychResolution ? "diptych" : null,
        CaptionPrefix = variant.CaptionPrefix,
        Output = Path.Combine(options.Output, variant.Name, $"seed-{seed}"),
        Steps = options.Steps,
        Seed = seed,
        Rank = options.Rank,
        LearningRate = options.LearningRate,
        Resolution = resolution,
        CheckpointEvery = options.Steps,
        Guidance = FluxModelFolder.TrainingGuidance(options.FluxDir, options.TrainGuidance),
        Text = options.TextInEffect,
        Validation = heldOutDir,
        ValidationEdits = false,
        ValidationLossEvery = Math.Max(1, (options.Steps + LossPoints - 1) / LossPoints),
    };
}
