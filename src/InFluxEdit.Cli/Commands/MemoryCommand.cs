using System.Globalization;
using CommandLine;
using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Quantization;

namespace InFluxEdit.Cli.Commands;

[Verb("memory", HelpText = "Plan the GPU memory FLUX Fill needs on --device cuda, in seconds and without a GPU or weights: runs the real-size graphs on shapes alone and counts what the CUDA backend would hold (weights, activations and scratch in its pools), for an edit and a LoRA training step with and without --recompute, per --base-precision (and with --offload). The figures are planned, not measured on a GPU: pick the settings that fit your card before downloading 24 GB.")]
public sealed class MemoryOptions : OutputOptions
{
    [Option("model", Default = "flux-fill-dev", HelpText = "The compiled transformer (see 'influx-cli models').")]
    public string Model { get; set; } = "flux-fill-dev";

    [Option("vae-model", Default = "flux-vae", HelpText = "The compiled autoencoder, loaded beside the transformer at edit.")]
    public string VaeModel { get; set; } = "flux-vae";

    [Option("clip-model", Default = "clip-l", HelpText = "The compiled CLIP text encoder.")]
    public string ClipModel { get; set; } = "clip-l";

    [Option("t5-model", Default = "t5-xxl", HelpText = "The compiled T5 text encoder.")]
    public string T5Model { get; set; } = "t5-xxl";

    [Option("resolution", Default = "1024", HelpText = "Image size in pixels: one side (1024: 1024x1024, 4096 image tokens) or WIDTHxHEIGHT, multiples of 16.")]
    public string Resolution { get; set; } = "1024";

    [Option("t5-length", Default = 512, HelpText = "T5 tokens per prompt: the transformer's text tokens.")]
    public int T5Length { get; set; } = 512;

    [Option("rank", Default = 16, HelpText = "LoRA rank of the training rows.")]
    public int Rank { get; set; } = 16;

    [Option("preset", Default = "diffusers", HelpText = "LoRA preset of the training rows (FLUX: diffusers or kohya).")]
    public string Preset { get; set; } = "diffusers";

    [Option("precision", Default = "bf16", HelpText = "The --precision planned for: bf16 (bf16 activations at edit and in training, bf16 scratch for dequantized weights) or fp32.")]
    public string Precision { get; set; } = "bf16";

    [Option("attention", Default = "auto", HelpText = "The --attention planned for: auto (flash with bf16), flash, cublas (a float32 score matrix of up to 2 GiB) or tiled.")]
    public string Attention { get; set; } = "auto";

    [Option(BasePrecisionOption.Name, Default = "bf16,fp8,q8_0,q4_k", HelpText = "Comma-separated --base-precision values to plan, one row group each (see 'edit --help').")]
    public string BasePrecisions { get; set; } = "bf16,fp8,q8_0,q4_k";

    [Option("offload", HelpText = "Also plan every row with --offload (weight matrices streamed from host memory through a --gpu-memory-budget arena).")]
    public bool Offload { get; set; }

    [Option("gpu-memory-budget", Default = 4.0, HelpText = "With --offload: the arena's GiB (on a GPU the default is half its free memory; here give the figure you would).")]
    public double GpuMemoryBudget { get; set; } = 4.0;

    [Option(VaeTiling.OptionName, HelpText = "The edit's VAE tile size in pixels, or off (default 512, as edit).")]
    public string? VaeTile { get; set; }
}

public static class MemoryCommand
{
    private const double GiB = 1L << 30;

    public static int Run(MemoryOptions options)
    {
        var output = options.CommandOutput;
        var (width, height) = ParseResolution(options.Resolution);
        if (options.Offload && !(options.GpuMemoryBudget > 0))
            throw new ArgumentException($"--gpu-memory-budget must be a positive number of GiB, not {options.GpuMemoryBudget}");
        var settings = new MemoryPlanSettings
        {
            Model = options.Model, VaeModel = options.VaeModel, ClipModel = options.ClipModel, T5Model = options.T5Model,
            Width = width, Height = height, TextTokens = options.T5Length, Rank = options.Rank, Preset = options.Preset,
            Precision = BackendFactory.ParsePrecision(options.Precision), Attention = BackendFactory.ParseAttention(options.Attention),
            Bases = options.BasePrecisions.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(text => BasePrecision.Parse(text, "--" + BasePrecisionOption.Name)).ToList(),
            OffloadBudgetBytes = options.Offload ? (long)(options.GpuMemoryBudget * GiB) : null,
            VaeTiling = VaeTiling.Parse(options.VaeTile),
        };
        var rows = MemoryPlan.Plan(settings, StageProgress.Of(output.Stages, "planning", "runs"));
        output.Log.WriteLine($"GPU memory PLANNED for {settings.Model} on --device cuda --precision {options.Precision} --attention {options.Attention}, " +
            $"{width}x{height} ({settings.ImageTokens} image + {settings.TextTokens} text tokens), LoRA rank {settings.Rank} ({settings.Preset}); " +
            "counted from the CUDA backend's allocation rules on shapes alone, not measured on a GPU:");
        var table = output.Table("work", "base", "offload", "weights GB", "activations peak GB", "total GB", "needed GB");
        foreach (var row in rows)
            table.AddCells(row.Work, row.Base, row.Offload ? "yes" : "", Gb(row.Figures.WeightBytes), Gb(row.Figures.ActivationPeakBytes),
                Gb(row.Figures.TotalPeakBytes), Gb(row.Figures.NeededBytes));
        output.Write(table);
        output.Log.WriteLine("GB = 10^9 bytes. activations: the most the backend's buffer pools hold (activations, gradients, adapters, AdamW moments, scratch, " +
            "parked buffers, the offload arena), the backend's own count; total: weights and pools at their fullest moment; needed: the same without " +
            "parked buffers, which a pool frees when the GPU runs out (the least free memory the run needs). The edit rows start after the text encoders, " +
            "whose weights and parked buffers are freed first (as edit frees them), and include the VAE's weights and its tiled encode and decode; " +
            "the training rows are the transformer alone (captions and latents encoded beforehand). CUDA's own context (~0.3-0.5 GB) and cuBLAS workspaces come on top.");
        output.Result = new { Planned = true, settings.Model, Width = width, Height = height, settings.ImageTokens, settings.TextTokens, Rows = rows };
        return 0;
    }

    private static string Gb(long bytes) => (bytes / 1e9).ToString("F2", CultureInfo.InvariantCulture);

    private static (int Width, int Height) ParseResolution(string text)
    {
        string[] sides = text.ToLowerInvariant().Split('x');
        if (sides.Length is 1 or 2 && sides.All(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int side) && side > 0 && side % 16 == 0))
        {
            int width = int.Parse(sides[0], CultureInfo.InvariantCulture);
            return (width, sides.Length == 2 ? int.Parse(sides[1], CultureInfo.InvariantCulture) : width);
        }
        throw new ArgumentException($"--resolution '{text}' is not one side or WIDTHxHEIGHT in pixels, positive multiples of 16 (e.g. 1024 or 1024x768)");
    }
}
