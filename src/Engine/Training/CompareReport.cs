using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using InFluxEdit.Runtime.Images;

namespace InFluxEdit.Training;

/// <summary>One model's (a variant trained with one seed, or the base) edits of the held-out pairs, scored.</summary>
/// <param name="EditRegionPsnr">PSNR over the pixels the edit changes (target against source, <see cref="ImageMetrics.ChangedPixels"/>); null when no pair changes any.</param>
/// <param name="FillAccuracy">Circles datasets: the share of edits with the fill colour right (likewise background, both).</param>
/// <param name="ValidationLosses">The held-out loss over training (<see cref="ValidationLoss"/>); empty for the base.</param>
public sealed record SeedScore(long Seed, double Psnr, double? EditRegionPsnr, double Ssim, double? FillAccuracy, double? BackgroundAccuracy,
    double? BothAccuracy, double TrainSeconds, IReadOnlyList<ValidationLoss> ValidationLosses)
{
    /// <summary>The held-out loss after the last step; null for the base.</summary>
    public double? FinalValidationLoss => ValidationLosses.Count > 0 ? ValidationLosses[^1].Loss : null;
}

/// <summary>A variant's (or the base's) scores over the seeds.</summary>
/// <param name="Variant">Null for the base model alone.</param>
public sealed record VariantResult(string Name, CompareVariant? Variant, IReadOnlyList<SeedScore> Seeds);

/// <summary>What `compare` measured: the settings, and each variant's per-seed scores with their mean and sample standard deviation.</summary>
public sealed record CompareResult(IReadOnlyList<VariantResult> Variants, int Steps, int HeldOut, int Rank, int Resolution, int EditSteps, double Guidance)
{
    /// <summary>A reported metric: its key in compare.json, its column title and how to read it from a seed's score.</summary>
    public sealed record Metric(string Key, string Title, Func<SeedScore, double?> Read, string Format, bool Percent = false);

    public static readonly IReadOnlyList<Metric> Metrics =
    [
        new("psnr", "PSNR (dB)", s => s.Psnr, "F2"),
        new("edit_region_psnr", "edit-region PSNR (dB)", s => s.EditRegionPsnr, "F2"),
        new("ssim", "SSIM", s => s.Ssim, "F4"),
        new("fill_colour", "fill colour", s => s.FillAccuracy, "F0", Percent: true),
        new("background_colour", "background colour", s => s.BackgroundAccuracy, "F0", Percent: true),
        new("both_colours", "both colours", s => s.BothAccuracy, "F0", Percent: true),
        new("final_validation_loss", "final validation loss", s => s.FinalValidationLoss, "F4"),
        new("train_seconds", "training time (s)", s => s.TrainSeconds > 0 ? s.TrainSeconds : null, "F0"),
    ];

    /// <summary>The mean and the sample standard deviation (n − 1 in the denominator; null below two values) of the seeds' finite values; null mean when none.</summary>
    public static (double? Mean, double? Std, int Count) Summarize(IEnumerable<double?> values)
    {
        var finite = values.Where(v => v is { } x && double.IsFinite(x)).Select(v => v!.Value).ToList();
        if (finite.Count == 0) return (null, null, 0);
        double mean = finite.Average();
        double? std = finite.Count < 2 ? null : Math.Sqrt(finite.Sum(v => (v - mean) * (v - mean)) / (finite.Count - 1));
        return (mean, std, finite.Count);
    }

    /// <summary>The markdown table: per variant each metric's mean ± sample standard deviation over the seeds.</summary>
    public string Table()
    {
        var seeds = Variants[0].Seeds.Select(s => s.Seed).ToList();
        var text = new StringBuilder();
        string over = seeds.Count == 1 ? $"seed {seeds[0]}" : $"mean ± sample standard deviation (n − 1) over {seeds.Count} seeds ({string.Join(", ", seeds)})";
        text.AppendLine(FormattableString.Invariant(
            $"{HeldOut} held-out edits, {Steps} training steps, rank {Rank}, resolution {Resolution}, {EditSteps} sampling steps at guidance {Guidance}; {over}"));
        text.AppendLine();
        text.AppendLine("| variant | " + string.Join(" | ", Metrics.Select(m => m.Title)) + " | loss plot |");
        text.AppendLine("|---|" + string.Concat(Metrics.Select(_ => "---|")) + "---|");
        foreach (var result in Variants)
            text.AppendLine($"| {result.Name} | " + string.Join(" | ", Metrics.Select(m => Cell(m, result))) + $" | {result.Variant?.Colour ?? "—"} |");
        return text.ToString();
    }

    private static string Cell(Metric metric, VariantResult result)
    {
        var (mean, std, _) = Summarize(result.Seeds.Select(metric.Read));
        if (mean is not { } m) return "—";
        double scale = metric.Percent ? 100 : 1;
        string unit = metric.Percent ? "%" : "";
        string value = (m * scale).ToString(metric.Format, CultureInfo.InvariantCulture) + unit;
        return std is { } s ? $"{value} ± {(s * scale).ToString(metric.Format, CultureInfo.InvariantCulture)}{unit}" : value;
    }

    /// <summary>compare.json: the settings, and per variant its seeds' scores and loss curves with each metric's mean and standard deviation.</summary>
    public JsonObject ToJson()
    {
        static JsonNode? Number(double? value) => value is { } v && double.IsFinite(v) ? JsonValue.Create(v) : null;
        var variants = new JsonArray();
        foreach (var result in Variants)
        {
            var seeds = new JsonArray();
            foreach (var score in result.Seeds)
            {
                var seed = new JsonObject { ["seed"] = score.Seed };
                foreach (var metric in Metrics) seed[metric.Key] = Number(metric.Read(score));
                seed["validation_loss"] = new JsonArray(score.ValidationLosses.Select(p => (JsonNode)new JsonArray(p.Step, Number(p.Loss))).ToArray());
                seeds.Add(seed);
            }
            var mean = new JsonObject();
            var std = new JsonObject();
            foreach (var metric in Metrics)
            {
                var (m, s, _) = Summarize(result.Seeds.Select(metric.Read));
                mean[metric.Key] = Number(m);
                std[metric.Key] = Number(s);
            }
            variants.Add(new JsonObject
            {
                ["name"] = result.Name,
                ["description"] = result.Variant?.Description ?? "the base model alone, channel method, no LoRA",
                ["plot_colour"] = result.Variant is { } v ? $"{v.Colour} #{v.R:x2}{v.G:x2}{v.B:x2}" : null,
                ["seeds"] = seeds,
                ["mean"] = mean,
                ["std"] = std,
            });
        }
        return new JsonObject
        {
            ["steps"] = Steps,
            ["held_out"] = HeldOut,
            ["rank"] = Rank,
            ["resolution"] = Resolution,
            ["edit_steps"] = EditSteps,
            ["guidance"] = Guidance,
            ["std"] = "sample standard deviation over the seeds (n − 1 in the denominator); null below two seeds",
            ["validation_loss"] = $"held-out flow-matching loss at σ = {LoraTraining.EvaluationSigma} with fixed noise over the generated tokens, [step, loss]",
            ["variants"] = variants,
        };
    }

    /// <summary>Writes compare.json atomically.</summary>
    public void WriteJson(string path) =>
        Runtime.IO.AtomicFile.Write(path, stream =>
        {
            using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            ToJson().WriteTo(writer);
        });

    /// <summary>
    /// The held-out loss per variant over the steps (at each step the mean over the seeds that measured it), drawn by
    /// <see cref="LinePlot"/> and written to <paramref name="path"/>; returns the axes' ranges for the caller to print.
    /// </summary>
    public PlotAxes WriteLossPlot(string path, int width = 800, int height = 500)
    {
        var series = Variants.Where(r => r.Variant != null && r.Seeds.Any(s => s.ValidationLosses.Count > 0)).Select(r => new PlotSeries(r.Name,
                r.Variant!.R, r.Variant.G, r.Variant.B,
                r.Seeds.SelectMany(s => s.ValidationLosses).GroupBy(p => p.Step).OrderBy(g => g.Key)
                    .Select(g => ((double)g.Key, g.Average(p => p.Loss))).ToList()))
            .ToList();
        var (image, axes) = LinePlot.Draw(series, width, height, logY: true);
        ImageFile.SaveRgb(image, path);
        return axes;
    }
}
