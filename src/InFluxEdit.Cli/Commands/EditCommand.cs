using System.Diagnostics;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Cli.Text;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Commands;

[Verb("edit", HelpText = "Edit an image with a FLUX.1 Fill model: fill a masked region (--method fill) or apply an edit to the whole picture (channel, concat). Any image size: sides are brought to multiples of 16 and the output has the input's size.")]
public sealed class EditOptions : TextEncoderOptions
{
    [Option("model", HelpText = "A compiled transformer's name (see 'influx-cli models', e.g. flux-fill-dev, flux-fill-tiny) or a checkpoint to recognise. Default: recognised from --weights.")]
    public string? Model { get; set; }

    [Option("weights", HelpText = "The transformer checkpoint (.safetensors, BFL keys, e.g. flux1-fill-dev.safetensors). May be left out when --model is a checkpoint path.")]
    public string? Weights { get; set; }

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

    [Option("lora", HelpText = "A LoRA to apply (repeat the option for several): kohya/ComfyUI (lora_unet_…lora_down/lora_up/alpha), diffusers/PEFT (transformer.…lora_A/lora_B, split q/k/v included) or checkpoint-native names. Merged into the weights at load.")]
    public IEnumerable<string> Loras { get; set; } = Array.Empty<string>();

    [Option("lora-scale", HelpText = "Strength of each --lora, in the same order (default 1.0 each).")]
    public IEnumerable<float> LoraScales { get; set; } = Array.Empty<float>();

    [Option("output", Required = true, HelpText = "Where to write the edited image (PNG; the extension picks the format).")]
    public string Output { get; set; } = "";
}

public static class EditCommand
{
    /// <summary>
    /// The sum of every --lora's weight deltas, each at its --lora-scale, and the whole weights they carry (a trained
    /// img_in); null without LoRAs.
    /// </summary>
    internal static (Dictionary<string, HostTensor> Deltas, Dictionary<string, HostTensor> Replacements)? ReadLoras(
        IReadOnlyList<string> paths, IReadOnlyList<float> scales, ModelDescriptor model, TextWriter log)
    {
        if (scales.Count > paths.Count)
            throw new ArgumentException($"{scales.Count} --lora-scale values for {paths.Count} --lora files");
        if (paths.Count == 0) return null;
        var total = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        var replacements = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        for (int i = 0; i < paths.Count; i++)
        {
            float scale = i < scales.Count ? scales[i] : 1f;
            var (deltas, whole) = LoraReader.Read(paths[i], model, scale);
            foreach (var (key, value) in whole)
            {
                if (!replacements.TryAdd(key, value))
                    throw new ArgumentException($"two --lora files both replace '{key}' whole: apply one of them");
            }
            log.WriteLine($"lora: {paths[i]} at scale {scale}, {deltas.Count} layers" +
                          (whole.Count > 0 ? $", replacing {string.Join(", ", whole.Keys)}" : ""));
            foreach (var (key, delta) in deltas)
            {
                if (!total.TryGetValue(key, out var sum)) total[key] = delta;
                else for (int j = 0; j < sum.Data.Length; j++) sum.Data[j] += delta.Data[j];
            }
        }
        return (total, replacements);
    }

    public static int Run(EditOptions options) => Run(options, System.Console.Out, ModelCatalog.All);

    /// <summary>Runs an edit, logging to <paramref name="log"/>; the catalog is a parameter so tests can say which models exist.</summary>
    public static int Run(EditOptions options, TextWriter log, IReadOnlyList<CompiledModelInfo> catalog)
    {
        // Everything that can be checked in a second is checked before the models load.
        if (options.Steps < 1) throw new ArgumentException($"--steps must be at least 1; got {options.Steps}");
        if (options.Method == EditMethod.Fill && options.Mask == null)
            throw new ArgumentException("--method fill needs --mask (white = region to generate)");
        if (options.Method != EditMethod.Fill && options.Mask != null)
            throw new ArgumentException($"--mask is used by --method fill only; --method {Name(options.Method)} edits the whole image");
        if (options.Noise != null && options.Seed != null)
            throw new ArgumentException("give --seed or --noise, not both: the noise file replaces the seeded noise");

        var image = ImageFile.LoadRgb(options.Input);
        int height = image.Shape[2], width = image.Shape[3];
        HostTensor? mask = null;
        if (options.Mask != null)
        {
            mask = ImageFile.LoadMask(options.Mask);
            if (mask.Shape[2] != height || mask.Shape[3] != width)
                throw new ArgumentException(
                    $"the mask {options.Mask} is {mask.Shape[3]}×{mask.Shape[2]} but the input {options.Input} is {width}×{height}; they must have one size");
        }
        var plan = ImageSizing.Plan(height, width, options.Fit, $"the input {options.Input}");
        log.WriteLine($"input: {plan.Describe()}");

        string checkpoint, modelName;
        string? name;
        if (options.Model != null && File.Exists(options.Model))
            (checkpoint, name) = (options.Weights ?? options.Model, null);
        else if (options.Weights == null && options.FluxDir != null)
            (checkpoint, name) = (FluxModelFolder.Transformer(options.FluxDir), options.Model);
        else
            (checkpoint, name) = (options.Weights ?? throw new ArgumentException(
                options.Model == null
                    ? "--weights is required: the transformer checkpoint (or give the checkpoint as --model)"
                    : $"--weights is required with --model {options.Model} (or '{options.Model}' is a checkpoint path that does not exist)"), options.Model);
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(checkpoint, FillPipeline.TransformerFamily, catalog, name);
        modelName = transformerInfo.Descriptor.Name;
        string vaePath = options.AutoencoderPath(options.Vae);
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        var noise = options.Noise == null ? null : LoadNoise(options.Noise);
        long seed = options.Seed ?? Random.Shared.NextInt64(0, long.MaxValue);

        using var backend = options.CreateBackend(log);
        long pixels = (long)plan.Width * plan.Height * (options.Method == EditMethod.Concat ? 2 : 1);
        Runtime.Training.MemoryEstimate.RequireForEditing(transformerInfo.Descriptor, vaeInfo.Descriptor, pixels, pixels / 256 + options.PromptLength,
            Runtime.Training.MemoryEstimate.AvailableBytes(backend), "give a smaller --input (or scale it down)");
        var text = CaptionEncodings.Encode([options.Prompt], options, transformerInfo.Descriptor, options.TextCache ?? DefaultTextCache(),
            backend, catalog, log)[options.Prompt];
        log.WriteLine($"transformer: {modelName} — {transformerReason}");
        var loraDeltas = ReadLoras(options.Loras.ToList(), options.LoraScales.ToList(), transformerInfo.Descriptor, log);
        using var transformer = LoadedModel.Load(checkpoint, transformerInfo, transformerReason, backend,
            new ProgressBar("loading transformer", "tensors"), loraDeltas?.Deltas, loraDeltas?.Replacements);
        log.WriteLine($"vae: {vaeInfo.Descriptor.Name} — {vaeReason}");
        using var vae = LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend, new ProgressBar("loading vae", "tensors"));

        var pipeline = new FillPipeline(transformer.Model, vae.Model);
        log.WriteLine($"method: {Name(options.Method)}, {options.Steps} steps, guidance {options.Guidance}, " +
                      (noise != null ? $"noise from {options.Noise}" : $"seed {seed}"));
        var clock = Stopwatch.StartNew();
        var result = pipeline.Edit(
            new FillEditRequest(image, mask, options.Method, text, options.Steps, options.Guidance, noise, seed, options.Fit),
            new ProgressBar("denoising", "it"));
        ImageFile.SaveRgb(result.Image, options.Output);
        log.WriteLine($"wrote {options.Output} ({result.Image.Shape[3]}×{result.Image.Shape[2]}) in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

    private static string DefaultTextCache()
    {
        string? root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (string.IsNullOrEmpty(root)) root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "influxedit", "text");
    }

    private static string Name(EditMethod method) => method.ToString().ToLowerInvariant();

    private static HostTensor LoadNoise(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (file.TryGetTensor("noise", out _)) return file.ReadFloat32("noise");
        if (file.Tensors.Count == 1) return file.ReadFloat32(file.Tensors[0].Name);
        throw new InvalidDataException(
            $"noise file {path} has {file.Tensors.Count} tensors ({string.Join(", ", file.Tensors.Select(t => t.Name))}) and none named 'noise'");
    }
}
