using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>
/// A compiled FLUX Fill transformer as the sampler uses it: checked to take [noisy latent 64 | image latent 64 |
/// mask 256] and give the 64-feature velocity, and driven through the Euler loop.
/// </summary>
public sealed class FillTransformer
{
    public const string Family = "flux-fill";
    private const int PackedLatentFeatures = 64;
    private const int ConditionFeatures = PackedLatentFeatures + 256;

    private readonly CompiledModel _transformer;

    public FillTransformer(CompiledModel transformer)
    {
        ModelEntries.Require(transformer, "forward", new[] { "img", "img_ids", "txt", "txt_ids", "timesteps", "y" }, "out");
        int inChannels = TextConditioning.IntParam(transformer.Info, "in_channels");
        int outChannels = TextConditioning.IntParam(transformer.Info, "out_channels");
        if (inChannels != PackedLatentFeatures + ConditionFeatures || outChannels != PackedLatentFeatures)
            throw new ArgumentException(
                $"{transformer.Info.Name} takes {inChannels} input and gives {outChannels} output channels; a FLUX Fill transformer takes " +
                $"{PackedLatentFeatures + ConditionFeatures} (noisy latent 64 | image latent 64 | mask 256) and gives {PackedLatentFeatures}");
        _transformer = transformer;
    }

    public ModelDescriptor Info => _transformer.Info;

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
        text.Validate(Info, "text embeddings");
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
}
