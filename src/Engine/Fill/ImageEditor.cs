using System.Diagnostics;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Text;

namespace InFluxEdit.Fill;

/// <summary>A LoRA file to apply and its strength.</summary>
public sealed record LoraFile(string Path, float Scale = 1f);

/// <summary>One edit of an image file by <see cref="ImageEditor.Edit"/>.</summary>
public sealed record EditRequest : ModelSelection
{
    /// <summary>The image to edit (PNG, JPEG, BMP, GIF, TGA, WebP, TIFF; alpha is dropped).</summary>
    public required string Input { get; init; }

    /// <summary>Where the edited image is written (the extension picks the format); null: only returned.</summary>
    public string? Output { get; init; }

    /// <summary>What the edit should produce.</summary>
    public string Prompt { get; init; } = "";

    /// <summary>For <see cref="EditMethod.Fill"/>: the mask, the input's size; white = region to generate.</summary>
    public string? Mask { get; init; }

    public EditMethod Method { get; init; } = EditMethod.Channel;

    /// <summary>Where prompt encodings are kept for reuse; default: $XDG_CACHE_HOME/influxedit/text.</summary>
    public string? TextCache { get; init; }

    /// <summary>LoRAs merged into the transformer's weights at load.</summary>
    public IReadOnlyList<LoraFile> Loras { get; init; } = [];

    /// <summary>Refuse a LoRA holding keys this model does not apply (text-encoder adapters, unknown layers) instead of skipping them with a report.</summary>
    public bool StrictLora { get; init; }

    public int Steps { get; init; } = 50;
    public double Guidance { get; init; } = 30.0;

    /// <summary>Seed of the starting noise; null: a random one (returned in the result).</summary>
    public long? Seed { get; init; }

    /// <summary>A .safetensors file with the starting noise instead of a seed.</summary>
    public string? Noise { get; init; }

    /// <summary>How sides that are not multiples of 16 are handled.</summary>
    public SizingMode Fit { get; init; } = SizingMode.Resize;

    /// <summary>How the autoencoder splits a large image into tiles.</summary>
    public VaeTiling VaeTiling { get; init; } = VaeTiling.Default;
}

/// <summary>The edited image [1, 3, H, W] at the input's size, the seed it started from and how long sampling took.</summary>
public sealed record EditResult(HostTensor Image, string? OutputPath, long Seed, string TransformerModel, TimeSpan SamplingTime);

/// <summary>
/// Edits image files with a FLUX.1 Fill model: every input is checked before the models load, the prompt is encoded
/// (and cached) before the transformer loads, LoRAs are merged into its weights, and the edit is sampled.
/// </summary>
public static class ImageEditor
{
    /// <summary>Runs one edit on <paramref name="backend"/>.</summary>
    /// <param name="log">Which models, LoRAs and settings are used, one line each.</param>
    /// <param name="progress">Loading and the sampling steps.</param>
    /// <param name="cancellation">Checked between the stages and before every sampling step.</param>
    public static EditResult Edit(EditRequest request, IBackend backend, TextWriter? log = null, IProgress<StageProgress>? progress = null,
        CancellationToken cancellation = default, IReadOnlyList<CompiledModelInfo>? catalog = null)
    {
        log ??= TextWriter.Null;
        catalog ??= ModelCatalog.All;
        // Everything that can be checked in a second is checked before the models load.
        if (request.Steps < 1) throw new ArgumentException($"--steps must be at least 1; got {request.Steps}");
        if (request.Method == EditMethod.Fill && request.Mask == null)
            throw new ArgumentException("--method fill needs --mask (white = region to generate)");
        if (request.Method != EditMethod.Fill && request.Mask != null)
            throw new ArgumentException($"--mask is used by --method fill only; --method {Name(request.Method)} edits the whole image");
        if (request.Noise != null && request.Seed != null)
            throw new ArgumentException("give --seed or --noise, not both: the noise file replaces the seeded noise");

        var image = ImageFile.LoadRgb(request.Input);
        int height = image.Shape[2], width = image.Shape[3];
        HostTensor? mask = null;
        if (request.Mask != null)
        {
            mask = ImageFile.LoadMask(request.Mask);
            if (mask.Shape[2] != height || mask.Shape[3] != width)
                throw new ArgumentException(
                    $"the mask {request.Mask} is {mask.Shape[3]}×{mask.Shape[2]} but the input {request.Input} is {width}×{height}; they must have one size");
        }
        var plan = ImageSizing.Plan(height, width, request.Fit, $"the input {request.Input}");
        log.WriteLine($"input: {plan.Describe()}");

        string checkpoint;
        string? name;
        if (request.Model != null && File.Exists(request.Model))
            (checkpoint, name) = (request.Weights ?? request.Model, null);
        else if (request.Weights == null && request.FluxDir != null)
            (checkpoint, name) = (FluxModelFolder.Transformer(request.FluxDir), request.Model);
        else
            (checkpoint, name) = (request.Weights ?? throw new ArgumentException(
                request.Model == null
                    ? "--weights is required: the transformer checkpoint (or give the checkpoint as --model)"
                    : $"--weights is required with --model {request.Model} (or '{request.Model}' is a checkpoint path that does not exist)"), request.Model);
        var (transformerInfo, transformerReason) = LoadedModel.Resolve(checkpoint, FillPipeline.TransformerFamily, catalog, name);
        string modelName = transformerInfo.Descriptor.Name;
        string vaePath = request.AutoencoderPath;
        var (vaeInfo, vaeReason) = LoadedModel.Resolve(vaePath, VaeCodec.Family, catalog);
        var noise = request.Noise == null ? null : LoadNoise(request.Noise);
        long seed = request.Seed ?? Random.Shared.NextInt64(0, long.MaxValue);
        // The autoencoder sees the processed image, both halves of the diptych for concat.
        int autoencodedWidth = plan.Width * (request.Method == EditMethod.Concat ? 2 : 1);
        long pixels = (long)autoencodedWidth * plan.Height;
        // A quantized file (fp8, GGUF) stays quantized in memory unless --base-precision says otherwise: it is why users hold one.
        var precision = request.BasePrecision ?? Runtime.Quantization.BasePrecision.Keep;
        Runtime.Training.MemoryEstimate.RequireForEditing(transformerInfo.Descriptor, vaeInfo.Descriptor, request.VaeTiling.PeakPixels(pixels), pixels / 256 + request.TextInEffect.PromptLength,
            Runtime.Training.MemoryEstimate.AvailableBytes(backend), "give a smaller --input (or scale it down)",
            LoadedModel.HeldWeightBytes(checkpoint, transformerInfo, precision));
        Benchmarks.MemoryPlan.RequireFitsGpuForEditing(backend, transformerInfo, vaeInfo, autoencodedWidth, plan.Height, request.TextInEffect.PromptLength,
            precision, request.VaeTiling, checkpoint);

        var text = CaptionEncodings.Encode([request.Prompt], request.TextInEffect, transformerInfo.Descriptor,
            request.TextCache ?? DefaultTextCache(), backend, catalog, log, progress)[request.Prompt];
        // The encoders are gone; their parked buffers would sit beside the transformer's weights.
        backend.ReleaseCachedMemory();
        cancellation.ThrowIfCancellationRequested();
        log.WriteLine($"transformer: {modelName} — {transformerReason}");
        if (request.BasePrecision != null)
            log.WriteLine(backend.HoldsQuantizedWeights || request.BasePrecision.Format?.AsDType() != null
                ? $"transformer weight matrices held as {request.BasePrecision} (--base-precision)"
                : $"transformer weight matrices in {request.BasePrecision}, decoded to float32 at upload: the {backend.Name} backend has no quantized kernels yet");
        // Over matrices held in quantized blocks, low-rank pieces act unmerged: merging would quantize the sum again.
        var quantized = request.Loras.Count > 0 && backend.HoldsQuantizedWeights && backend is ITrainingBackend
            ? LoadedModel.QuantizedMatrices(checkpoint, transformerInfo, precision)
            : [];
        var lora = LoraMerge.Split(request.Loras, transformerInfo.Descriptor, log, request.StrictLora, LoraSet.BaseWeightsOf(checkpoint),
            quantized, precision.ToString());
        // The transformer loads once the VAE has encoded the image and goes before the decode (FillPipeline.LoadingTransformerForSampling).
        var loading = new Stopwatch();
        LoadedModel LoadTransformer()
        {
            loading.Start();
            try
            {
                return LoadedModel.Load(checkpoint, transformerInfo, transformerReason, backend,
                    StageProgress.Of(progress, "loading transformer", "tensors"), lora.Merged, precision, unmerged: lora.Unmerged);
            }
            finally
            {
                loading.Stop();
            }
        }
        log.WriteLine($"vae: {vaeInfo.Descriptor.Name} — {vaeReason}");
        using var vae = LoadedModel.Load(vaePath, vaeInfo, vaeReason, backend, StageProgress.Of(progress, "loading vae", "tensors"));
        cancellation.ThrowIfCancellationRequested();

        if (request.VaeTiling.Enabled)
        {
            int downscale = VaeTiles.Downscale(vae.Model);
            var tiles = VaeTiles.Plan(vae.Model, request.VaeTiling, plan.Height / downscale, autoencodedWidth / downscale);
            if (tiles.IsTiled) log.WriteLine($"vae: encodes and decodes the {autoencodedWidth}×{plan.Height} image in {tiles.Describe()} (--{VaeTiling.OptionName})");
        }
        var pipeline = FillPipeline.LoadingTransformerForSampling(transformerInfo.Descriptor, LoadTransformer, vae.Model, request.VaeTiling);
        log.WriteLine($"method: {Name(request.Method)}, {request.Steps} steps, guidance {request.Guidance}, " +
                      (noise != null ? $"noise from {request.Noise}" : $"seed {seed}"));
        var clock = Stopwatch.StartNew();
        var result = pipeline.Edit(
            new FillEditRequest(image, mask, request.Method, text, request.Steps, request.Guidance, noise, seed, request.Fit),
            new CancellableSteps(StageProgress.Of(progress, "denoising", "it"), cancellation));
        var elapsed = clock.Elapsed - loading.Elapsed;
        if (request.Output != null) ImageFile.SaveRgb(result.Image, request.Output);
        return new EditResult(result.Image, request.Output, seed, modelName, elapsed);
    }

    /// <summary>Where prompt encodings are kept unless a request says: $XDG_CACHE_HOME/influxedit/text (~/.cache/influxedit/text).</summary>
    public static string DefaultTextCache()
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

    /// <summary>The sampler reports after every step: the place to stop a cancelled edit.</summary>
    private sealed class CancellableSteps(IProgress<(int Done, int Total)>? inner, CancellationToken cancellation) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value)
        {
            inner?.Report(value);
            cancellation.ThrowIfCancellationRequested();
        }
    }
}

/// <summary>LoRA files merged into one set of weight deltas.</summary>
public static class LoraMerge
{
    /// <summary>
    /// The sum of every LoRA's weight changes, each at its scale (DoRA and whole weights relative to
    /// <paramref name="baseWeights"/>); null without LoRAs. Keys a file holds that this model does not apply are
    /// reported to <paramref name="log"/> and skipped, or refused when <paramref name="strict"/>.
    /// </summary>
    public static Dictionary<string, HostTensor>? Read(IReadOnlyList<LoraFile> loras, ModelDescriptor model, TextWriter log,
        bool strict = false, Func<string, HostTensor>? baseWeights = null)
    {
        if (loras.Count == 0) return null;
        return Content(loras, model, log, strict, baseWeights).ToDeltas(model);
    }

    /// <summary>
    /// Like <see cref="Read"/>, but the low-rank pieces on the <paramref name="quantized"/> weight matrices (held in blocks as
    /// <paramref name="heldAs"/>) whose layers the forward applies adapters on stay apart, to act unmerged; the rest (dense
    /// changes: full-weight diffs, LoKr, LoHa, DoRA) is merged as before.
    /// </summary>
    public static LoraLoad Split(IReadOnlyList<LoraFile> loras, ModelDescriptor model, TextWriter log, bool strict,
        Func<string, HostTensor>? baseWeights, IReadOnlySet<string> quantized, string heldAs)
    {
        if (loras.Count == 0) return new LoraLoad(null, []);
        var content = Content(loras, model, log, strict, baseWeights);
        var adaptable = model.AdapterModules.ToHashSet(StringComparer.Ordinal);
        var unmerged = new List<LowRankDelta>();
        var merged = new List<LowRankDelta>();
        foreach (var piece in content.LowRank)
            (quantized.Contains(piece.Module + ".weight") && adaptable.Contains(piece.Module) ? unmerged : merged).Add(piece);
        if (unmerged.Count == 0) return new LoraLoad(content.ToDeltas(model), []);
        log.WriteLine($"lora: {unmerged.Count} low-rank pieces kept unmerged beside the {heldAs} base (no requantization)");
        int requantized = merged.Count(p => quantized.Contains(p.Module + ".weight")) + content.Dense.Count(d => quantized.Contains(d.Parameter));
        if (requantized > 0)
            log.WriteLine($"lora: {requantized} pieces (dense changes, or layers the forward applies no adapters on) merged into {heldAs} weights, quantized again");
        content.LowRank.Clear();
        content.LowRank.AddRange(merged);
        return new LoraLoad(content.IsEmpty ? null : content.ToDeltas(model), unmerged);
    }

    private static LoraContent Content(IReadOnlyList<LoraFile> loras, ModelDescriptor model, TextWriter log, bool strict, Func<string, HostTensor>? baseWeights) =>
        LoraSet.Read(loras.Select(l => l.Path).ToList(), loras.Select(l => l.Scale).ToList(), model, strict, baseWeights, log);
}

/// <summary>LoRAs as loading takes them: changes merged into the weights, and low-rank pieces applied unmerged by the forward.</summary>
public sealed record LoraLoad(Dictionary<string, HostTensor>? Merged, IReadOnlyList<LowRankDelta> Unmerged);
