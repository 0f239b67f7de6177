using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Cli.Commands;

[Verb("edit", HelpText = "Edit an image with a FLUX.1 Fill model: fill a masked region (--method fill) or apply an edit to the whole picture (channel, concat). Any image size: sides are brought to multiples of 16 and the output has the input's size.")]
public sealed class EditOptions : TextEncoderOptions
{
    [Option("model", HelpText = "A compiled transformer's name (see 'influx-cli models', e.g. flux-fill-dev, flux-fill-tiny) or a checkpoint to recognise. Default: recognised from --weights.")]
    public string? Model { get; set; }

    [Option("weights", HelpText = "The transformer checkpoint (.safetensors, BFL keys, e.g. flux1-fill-dev.safetensors). May be left out when --model is a checkpoint path.")]
    public string? Weights { get; set; }

    [Option(BasePrecisionOption.Name, HelpText = BasePrecisionOption.Help)]
    public string? BasePrecision { get; set; }

    [Option("vae", HelpText = "The autoencoder checkpoint (BFL's ae.safetensors keys). Default: --flux-dir's ae.safetensors.")]
    public string? Vae { get; set; }

    [Option("input", Required = true, HelpText = "The image to edit (PNG, JPEG, BMP, GIF, TGA, WebP, TIFF; alpha is dropped).")]
    public string Input { get; set; } = "";

    [Option("mask", HelpText = "For --method fill: the mask, same size as the input; white (1) = region to generate, kept soft (gray values blend).")]
    public string? Mask { get; set; }

    [Option("method", Default = EditMethod.Channel, HelpText = "fill: inpaint the masked region. channel: condition on the whole source, all-white mask (method b). concat: diptych [source | edit], the right half generated (method a).")]
    public EditMethod Method { get; set; } = EditMethod.Channel;

    [Option("prompt", Default = "", HelpText = "What the edit should produce, e.g. \"violet circle with orange background\" (needs the text encoders: --text-encoder-dir or --clip/--t5 with their tokenizers).")]
    public string Prompt { get; set; } = "";

    [Option("text-cache", HelpText = "Where prompt encodings are kept for reuse. Default: $XDG_CACHE_HOME/influxedit/text (~/.cache/influxedit/text).")]
    public string? TextCache { get; set; }

    [Option("steps", Default = 50, HelpText = "Sampling steps (FLUX Fill's default: 50).")]
    public int Steps { get; set; } = 50;

    [Option("guidance", Default = 30.0, HelpText = "Distilled guidance, a model input (FLUX Fill's default: 30).")]
    public double Guidance { get; set; } = 30.0;

    [Option("seed", HelpText = "Seed of the starting noise (our own generator: the same seed does not give PyTorch's noise). Default: a random seed, printed.")]
    public long? Seed { get; set; }

    [Option("noise", HelpText = "Start from this noise instead of a seed: a .safetensors file with one tensor (or one named 'noise') [1, 16, H/8, W/8] at the processed size (width doubled for concat).")]
    public string? Noise { get; set; }

    [Option("fit", Default = SizingMode.Resize, HelpText = "Sides that are not multiples of 16: resize (bicubic, to the nearest multiples) or pad (repeat the edges, cropped off again).")]
    public SizingMode Fit { get; set; } = SizingMode.Resize;

    [Option(VaeTiling.OptionName, HelpText = "Encode and decode an image with a side over this many pixels in overlapping tiles of at most this size, blended across the overlaps, so the autoencoder's full-resolution activations are a tile's (the FLUX VAE's float32 decode: 0.67 GB at 512², so 2.7 GB or more whole at 1024² and 0.67 GB in 512 px tiles); 'off' runs every image whole. Tiling approximates the whole-image pass (normalization and the mid-block attention see one tile); an image that fits one tile is not tiled. Default: 512.")]
    public string? VaeTile { get; set; }

    [Option("lora", HelpText = "A LoRA to apply (repeat the option for several): kohya/ComfyUI (lora_unet_…, .diff/.diff_b/.set_weight), diffusers/PEFT/ai-toolkit (transformer.…lora_A/lora_B), OneTrainer, XLabs, LyCORIS LoKr/LoHa, DoRA, checkpoint-native names. Merged into the weights at load; see 'influx-cli lora inspect'.")]
    public IEnumerable<string> Loras { get; set; } = Array.Empty<string>();

    [Option("lora-scale", HelpText = "Strength of each --lora, in the same order (default 1.0 each); it scales full-weight changes (a trained img_in) too.")]
    public IEnumerable<float> LoraScales { get; set; } = Array.Empty<float>();

    [Option("strict-lora", HelpText = "Refuse a --lora holding keys this build does not apply (text-encoder adapters, unknown layers) instead of skipping them with a report.")]
    public bool StrictLora { get; set; }

    [Option("output", Required = true, HelpText = "Where to write the edited image (PNG; the extension picks the format).")]
    public string Output { get; set; } = "";
}

public static class EditCommand
{
    /// <summary>Every --lora with its --lora-scale (1 where none is given).</summary>
    public static IReadOnlyList<LoraFile> Loras(IReadOnlyList<string> paths, IReadOnlyList<float> scales) =>
        paths.Zip(LoraSet.ScalesFor(paths.Count, scales), (path, scale) => new LoraFile(path, scale)).ToList();

    /// <summary>What 'edit --json' reports beside the image written.</summary>
    public sealed record EditSummary(string Model, int Width, int Height, long Seed, int Steps);

    public static int Run(EditOptions options) => Run(options, options.CommandOutput, ModelCatalog.All);

    /// <summary>Runs an edit, logging to <paramref name="log"/>; the catalog is a parameter so tests can say which models exist.</summary>
    public static int Run(EditOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog) => Run(options, CommandOutput.Plain(log), catalog);

    private static int Run(EditOptions options, CommandOutput output, IReadOnlyList<CompiledModelInfo> catalog)
    {
        var request = new EditRequest
        {
            Input = options.Input, Output = options.Output, Prompt = options.Prompt, Mask = options.Mask, Method = options.Method,
            FluxDir = options.FluxDir, Model = options.Model, Weights = options.Weights, Vae = options.Vae, Text = options.TextSettings,
            TextCache = options.TextCache, Loras = Loras(options.Loras.ToList(), options.LoraScales.ToList()), StrictLora = options.StrictLora, Steps = options.Steps,
            Guidance = options.Guidance, Seed = options.Seed, Noise = options.Noise, Fit = options.Fit,
            BasePrecision = Runtime.Quantization.BasePrecision.Parse(options.BasePrecision), VaeTiling = VaeTiling.Parse(options.VaeTile),
        };
        using var backend = options.CreateBackend(output.Log);
        var result = ImageEditor.Edit(request, backend, output.Log, output.Stages, catalog: catalog);
        var (width, height) = (result.Image.Shape[3], result.Image.Shape[2]);
        output.Log.WriteLine($"wrote {options.Output} ({width}×{height}) in {result.SamplingTime.TotalSeconds:F1} s");
        DeviceOptions.ReportOffload(backend, output.Log);
        output.Wrote(options.Output);
        output.Took("sampling", result.SamplingTime);
        output.Result = new EditSummary(result.TransformerModel, width, height, result.Seed, options.Steps);
        return 0;
    }
}
