using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Fill;

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
    public const string TransformerFamily = "flux-fill";
    public const int LatentChannels = 16;
    private const int PackedLatentFeatures = 4 * LatentChannels;
    private const int ConditionFeatures = PackedLatentFeatures + 256;

    private readonly CompiledModel _transformer;
    private readonly CompiledModel _vae;

    public FillPipeline(CompiledModel transformer, CompiledModel vae)
    {
        ModelEntries.Require(transformer, "forward", new[] { "img", "img_ids", "txt", "txt_ids", "timesteps", "y" }, "out");
        int inChannels = TextConditioning.IntParam(transformer.Info, "in_channels");
        int outChannels = TextConditioning.IntParam(transformer.Info, "out_channels");
        if (inChannels != PackedLatentFeatures + ConditionFeatures || outChannels != PackedLatentFeatures)
            throw new ArgumentException(
                $"{transformer.Info.Name} takes {inChannels} input and gives {outChannels} output channels; a FLUX Fill transformer takes " +
                $"{PackedLatentFeatures + ConditionFeatures} (noisy latent 64 | image latent 64 | mask 256) and gives {PackedLatentFeatures}");
        VaeCodec.Require(vae);
        _transformer = transformer;
        _vae = vae;
    }

    public ModelDescriptor Transformer => _transformer.Info;

    /// <summary>[1, 3, 8h, 8w] in [−1, 1] → the scaled, shifted posterior mean [1, 16, h, w].</summary>
    public HostTensor Encode(HostTensor image) => VaeCodec.Encode(_vae, image);

    /// <summary>[1, 16, h, w] → [1, 3, 8h, 8w], about [−1, 1].</summary>
    public HostTensor Decode(HostTensor latent) => VaeCodec.Decode(_vae, latent);

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
        int[] noiseShape = NoiseShape(request.Method, image.Shape[2], image.Shape[3]);
        var noise = request.Noise ?? GaussianNoise.Create(request.Seed, noiseShape);
        if (!noise.Shape.AsSpan().SequenceEqual(noiseShape))
            throw new ArgumentException(
                $"the noise is {HostTensor.FormatShape(noise.Shape)}; a {image.Shape[3]}×{image.Shape[2]} {request.Method.ToString().ToLowerInvariant()} edit starts from {HostTensor.FormatShape(noiseShape)}");
        var packedNoise = LatentPacking.Pack(noise);
        var schedule = FlowMatchSchedule.Shifted(request.Steps, condition.Tokens);
        var latent = Denoise(packedNoise, condition, request.Text, schedule, request.Guidance, progress);
        var unpacked = LatentPacking.Unpack(latent, condition.LatentHeight, condition.LatentWidth);
        var decoded = Decode(unpacked);
        var edited = request.Method == EditMethod.Concat
            ? ImageSizing.Crop(decoded, 0, image.Shape[3], image.Shape[2], image.Shape[3])
            : decoded;
        return new FillEditResult(plan, packedNoise, condition.ImgIds, condition.ImgCond, schedule, latent, unpacked, decoded,
            ImageSizing.Restore(edited, plan));
    }

    /// <summary>
    /// The Euler loop: per step the transformer gets cat(x [64], img_cond [320]) → [1, Li, 384], timesteps = t and the
    /// guidance as inputs (FLUX dev is guidance-distilled: one call per step, no second unconditional pass).
    /// </summary>
    public HostTensor Denoise(HostTensor packedNoise, FillCondition condition, TextConditioning text, IReadOnlyList<double> schedule,
        double guidance, IProgress<(int Done, int Total)>? progress = null)
    {
        if (packedNoise.Rank != 3 || packedNoise.Shape[1] != condition.Tokens || packedNoise.Shape[2] != PackedLatentFeatures)
            throw new ArgumentException(
                $"packed noise {HostTensor.FormatShape(packedNoise.Shape)} does not fit the conditioning's {condition.Tokens} tokens of {PackedLatentFeatures} features");
        text.Validate(Transformer, "text embeddings");
        var backend = _transformer.Backend;
        var constant = new Dictionary<string, DeviceTensor>
        {
            ["img_ids"] = backend.Upload(condition.ImgIds),
            ["txt"] = backend.Upload(text.Txt),
            ["txt_ids"] = backend.Upload(new HostTensor(1, text.Txt.Shape[1], 3)),
            ["y"] = backend.Upload(text.Vec),
        };
        if (_transformer.Entries[0].InputNames.Contains("guidance"))
            constant["guidance"] = backend.Upload(new HostTensor(new[] { 1 }, new[] { (float)guidance }));
        try
        {
            return FlowMatchEuler.Sample(packedNoise, schedule, (t, x) =>
            {
                var inputs = new Dictionary<string, DeviceTensor>(constant)
                {
                    ["img"] = backend.Upload(LatentPacking.ConcatFeatures(x, condition.ImgCond)),
                    ["timesteps"] = backend.Upload(new HostTensor(new[] { 1 }, new[] { t })),
                };
                try
                {
                    var outputs = _transformer.Run("forward", inputs);
                    try
                    {
                        var velocity = outputs["out"];
                        return backend.Download(velocity, velocity.Shape);
                    }
                    finally
                    {
                        foreach (var output in outputs.Values) output.Dispose();
                    }
                }
                finally
                {
                    inputs["img"].Dispose();
                    inputs["timesteps"].Dispose();
                }
            }, progress);
        }
        finally
        {
            foreach (var tensor in constant.Values) tensor.Dispose();
        }
    }

    /// <summary>Bicubic resizing overshoots at hard mask edges; a mask weight outside [0, 1] would amplify the image.</summary>
    private static HostTensor ClampToUnit(HostTensor mask)
    {
        var clamped = new HostTensor((int[])mask.Shape.Clone());
        for (int i = 0; i < mask.Data.Length; i++) clamped.Data[i] = Math.Clamp(mask.Data[i], 0f, 1f);
        return clamped;
    }
}
