using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>One edit: the image (any size of at least 16×16), its mask for <see cref="EditMethod.Fill"/>, and how to sample.</summary>
/// <param name="Image">[1, 3, H, W] in [−1, 1].</param>
/// <param name="Mask">[1, 1, H, W] in [0, 1], 1 = generate; only for Fill.</param>
/// <param name="Noise">The starting noise [1, 16, H'/8, W'/8] at the processed size (W' doubled for concat); null draws it from <paramref name="Seed"/>.</param>
public sealed record FillEditRequest(
    HostTensor Image,
    HostTensor? Mask,
    EditMethod Method,
    TextConditioning Text,
    int Steps = 50,
    double Guidance = 30.0,
    HostTensor? Noise = null,
    long Seed = 0,
    SizingMode Sizing = SizingMode.Resize);

/// <summary>Every stage of an edit, named as the golden fill case names them, and the finished image.</summary>
/// <param name="Img">The packed starting noise [1, Li, 64].</param>
/// <param name="Decoded">The VAE's output at the processed size (the whole diptych for concat).</param>
/// <param name="Image">The edit at the input's size, [1, 3, H, W].</param>
public sealed record FillEditResult(
    SizingPlan Sizing,
    HostTensor Img,
    HostTensor ImgIds,
    HostTensor ImgCond,
    IReadOnlyList<double> Timesteps,
    HostTensor Latent,
    HostTensor Unpacked,
    HostTensor Decoded,
    HostTensor Image);

/// <summary>
/// FLUX.1 Fill sampling (spec §4, §6): encode the conditioning, start from noise, Euler-integrate the
/// transformer's velocity along the shifted schedule, unpack, decode. The transformer and the VAE run on their
/// backend; the small latent stays on the host between steps.
/// </summary>
public sealed class FillPipeline
{
    public const string TransformerFamily = FillTransformer.Family;
    public const int LatentChannels = 16;

    private readonly FillTransformer? _transformer;
    private readonly Func<LoadedModel>? _loadForSampling;
    private readonly CompiledModel _vae;
    private readonly VaeTiling _vaeTiling;

    /// <param name="vaeTiling">How large images are encoded and decoded; default: <see cref="VaeTiling.Default"/>.</param>
    public FillPipeline(CompiledModel transformer, CompiledModel vae, VaeTiling? vaeTiling = null)
        : this(transformer.Info, null, vae, vaeTiling) => _transformer = new FillTransformer(transformer);

    private FillPipeline(ModelDescriptor transformer, Func<LoadedModel>? loadForSampling, CompiledModel vae, VaeTiling? vaeTiling)
    {
        VaeCodec.Require(vae);
        Transformer = transformer;
        _loadForSampling = loadForSampling;
        _vae = vae;
        _vaeTiling = vaeTiling ?? VaeTiling.Default;
    }

    /// <summary>
    /// A pipeline that loads the transformer (<paramref name="load"/>, a model of <paramref name="transformer"/>) when an
    /// edit's sampling starts, after the VAE has encoded the conditioning, and frees it when sampling ends, before the
    /// decode: its weights never sit beside the VAE's full-resolution activations, the fullest moments of a one-image
    /// edit otherwise (edit's way; a pipeline that edits many images keeps one transformer loaded).
    /// </summary>
    public static FillPipeline LoadingTransformerForSampling(ModelDescriptor transformer, Func<LoadedModel> load, CompiledModel vae, VaeTiling? vaeTiling = null) =>
        new(transformer, load, vae, vaeTiling);

    public ModelDescriptor Transformer { get; }

    /// <summary>[1, 3, 8h, 8w] in [−1, 1] → the scaled, shifted posterior mean [1, 16, h, w].</summary>
    public HostTensor Encode(HostTensor image) => VaeTiles.Encode(_vae, image, _vaeTiling);

    /// <summary>[1, 16, h, w] → [1, 3, 8h, 8w], about [−1, 1].</summary>
    public HostTensor Decode(HostTensor latent) => VaeTiles.Decode(_vae, latent, _vaeTiling);

    /// <summary>The noise shape for an image of the processed size: the latent grid, doubled in width for concat.</summary>
    public static int[] NoiseShape(EditMethod method, int height, int width) =>
        new[] { 1, LatentChannels, height / 8, (method == EditMethod.Concat ? 2 * width : width) / 8 };

    public FillEditResult Edit(FillEditRequest request, IProgress<(int Done, int Total)>? progress = null)
    {
        if (request.Steps < 1) throw new ArgumentException($"steps must be at least 1; got {request.Steps}");
        request.Text.Validate(Transformer, "text embeddings");
        var (image, plan) = ImageSizing.ToMultipleOf16(request.Image, request.Sizing, "the input image");
        HostTensor? mask = null;
        if (request.Method == EditMethod.Fill)
        {
            var userMask = request.Mask ?? throw new ArgumentException("the fill method needs a mask (1 = region to generate)");
            if (userMask.Rank != 4 || userMask.Shape[1] != 1 || userMask.Shape[2] != plan.OriginalHeight || userMask.Shape[3] != plan.OriginalWidth)
                throw new ArgumentException(
                    $"the mask is {HostTensor.FormatShape(userMask.Shape)}; it must be [1, 1, {plan.OriginalHeight}, {plan.OriginalWidth}], the image's size");
            mask = ClampToUnit(ImageSizing.Apply(userMask, plan));
        }

        var condition = FillConditioning.Build(request.Method, image, mask, Encode);
        // Each phase's buffers (the VAE's full-resolution float32 activations, then the transformer's) are released before
        // the next, which has other sizes: they would otherwise sit parked beside it.
        var backend = _vae.Backend;
        backend.ReleaseCachedMemory();
        int[] noiseShape = NoiseShape(request.Method, image.Shape[2], image.Shape[3]);
        var noise = request.Noise ?? GaussianNoise.Create(request.Seed, noiseShape);
        if (!noise.Shape.AsSpan().SequenceEqual(noiseShape))
            throw new ArgumentException(
                $"the noise is {HostTensor.FormatShape(noise.Shape)}; a {image.Shape[3]}×{image.Shape[2]} {request.Method.ToString().ToLowerInvariant()} edit starts from {HostTensor.FormatShape(noiseShape)}");
        var packedNoise = LatentPacking.Pack(noise);
        var schedule = FlowMatchSchedule.Shifted(request.Steps, condition.Tokens);
        HostTensor latent;
        if (_transformer != null)
            latent = _transformer.Denoise(packedNoise, condition, request.Text, schedule, request.Guidance, progress);
        else
        {
            using var loaded = _loadForSampling!();
            if (loaded.Model.Info.Name != Transformer.Name)
                throw new InvalidOperationException($"the pipeline samples with {Transformer.Name}, and its loader gave {loaded.Model.Info.Name}");
            latent = new FillTransformer(loaded.Model).Denoise(packedNoise, condition, request.Text, schedule, request.Guidance, progress);
        }
        var unpacked = LatentPacking.Unpack(latent, condition.LatentHeight, condition.LatentWidth);
        backend.ReleaseCachedMemory();
        var decoded = Decode(unpacked);
        var edited = request.Method == EditMethod.Concat
            ? ImageSizing.Crop(decoded, 0, image.Shape[3], image.Shape[2], image.Shape[3])
            : decoded;
        return new FillEditResult(plan, packedNoise, condition.ImgIds, condition.ImgCond, schedule, latent, unpacked, decoded,
            ImageSizing.Restore(edited, plan));
    }

    /// <summary>Bicubic resizing overshoots at hard mask edges; a mask weight outside [0, 1] would amplify the image.</summary>
    private static HostTensor ClampToUnit(HostTensor mask)
    {
        var clamped = new HostTensor((int[])mask.Shape.Clone());
        for (int i = 0; i < mask.Data.Length; i++) clamped.Data[i] = Math.Clamp(mask.Data[i], 0f, 1f);
        return clamped;
    }
}
