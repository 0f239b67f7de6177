using InFluxEdit.Fill;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Training;

/// <summary>
/// Each pair's conditioning and target latent, encoded once and kept in a run's cache folder (keyed by method, size and
/// VAE file) so later runs and resumes skip the VAE.
/// </summary>
public static class LatentCache
{
    /// <summary>
    /// The training examples of <paramref name="dataset"/> at each of <paramref name="resolutions"/> (one list per
    /// resolution, the pairs in the dataset's order); the VAE is loaded (by <paramref name="loadVae"/>) once, and only
    /// when a pair is not cached at some resolution.
    /// </summary>
    /// <param name="diptychResolution">Concat: the diptych's long side is the buckets' resolution (as the seed resizes) instead of each half's area.</param>
    /// <param name="captionPrefix">Put before each caption to look up its encoding in <paramref name="texts"/>.</param>
    /// <param name="vaePath">The autoencoder checkpoint <paramref name="loadVae"/> loads as <paramref name="vaeModel"/>: with it, the cache's key.</param>
    /// <param name="cacheOnly">Every pair must be in the cache already (ranks after rank 0 built it): a missing one is an error, never encoded.</param>
    /// <param name="bothSides">Concat: also the diptych with its left half masked (<see cref="FillConditioning.ForConcatReversed"/>).</param>
    /// <param name="zeroChannelMask">Channel: the all-zero mask the seed's code trains under instead of all white.</param>
    public static List<List<FillTrainer.Example>> Examples(PairDataset dataset, EditMethod method, LossRegion lossRegion, IReadOnlyList<AspectBuckets> resolutions,
        bool diptychResolution, string cacheDir, string vaePath, string vaeModel, Func<LoadedModel> loadVae, IReadOnlyDictionary<string, TextConditioning> texts, string? captionPrefix,
        TextWriter log, IProgress<StageProgress>? progress = null, bool cacheOnly = false, bool bothSides = false, bool zeroChannelMask = false)
    {
        bothSides &= method == EditMethod.Concat;
        if (zeroChannelMask && method != EditMethod.Channel)
            throw new ArgumentException($"the seed's all-zero training mask applies to the channel method only, not {method.ToString().ToLowerInvariant()}");
        Directory.CreateDirectory(cacheDir);
        // The VAE file's full path, size and last write time and the compiled autoencoder: a retrained, replaced or
        // copied file misses the cache (equal sizes are the rule for one architecture) and is encoded again, never a wrong hit.
        var vaeFile = new FileInfo(vaePath);
        string vaeTag = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
            $"{vaeFile.FullName}|{vaeFile.Length}|{vaeFile.LastWriteTimeUtc.Ticks}|{vaeModel}")))[..16];
        string methodName = method.ToString().ToLowerInvariant() + (zeroChannelMask ? "-zeromask" : "") + (bothSides ? "-both-sides" : "");
        var atResolutions = new List<List<FillTrainer.Example>>();
        LoadedModel? vae = null;
        try
        {
            foreach (var buckets in resolutions)
            {
                var examples = new List<FillTrainer.Example>();
                int encoded = 0;
                foreach (var pair in dataset.Pairs)
                {
                    var bucket = diptychResolution ? buckets.DiptychHalf(pair.Width, pair.Height) : buckets.Assign(pair.Width, pair.Height);
                    string path = Path.Combine(cacheDir, $"{pair.Name}.{methodName}.{bucket.Width}x{bucket.Height}.{vaeTag}.safetensors");
                    if (!File.Exists(path) && cacheOnly) throw SharedCache.Missing($"the latents of pair '{pair.Name}' ({Path.GetFileName(path)})", cacheDir);
                    if (!File.Exists(path))
                    {
                        vae ??= loadVae();
                        var (source, target) = PairDataset.Load(pair, bucket);
                        var model = vae.Model;
                        HostTensor Encode(HostTensor image) => VaeCodec.Encode(model, image);
                        // Inpainting: the pair's "target" is the mask; the model learns to restore the masked image.
                        var fillMask = method == EditMethod.Fill ? MaskFromRgb(target) : null;
                        var condition = zeroChannelMask ? FillConditioning.ForChannel(source, Encode, maskValue: 0f)
                            : FillConditioning.Build(method, source, fillMask, Encode);
                        var x0 = FillConditioning.TrainingTarget(method, source, method == EditMethod.Fill ? source : target, Encode);
                        var tensors = new Dictionary<string, HostTensor>
                        {
                            ["img_cond"] = condition.ImgCond,
                            ["img_ids"] = condition.ImgIds,
                            ["x0"] = x0,
                        };
                        if (bothSides) tensors[ReversedName] = FillConditioning.ForConcatReversed(source, target, Encode).ImgCond;
                        SafeTensorsWriter.Write(path, tensors);
                        encoded++;
                    }
                    using var file = SafeTensorsFile.Open(path);
                    var imgCond = file.ReadFloat32("img_cond");
                    var example = new FillTrainer.Example(pair.Name, imgCond, file.ReadFloat32("img_ids"), file.ReadFloat32("x0"),
                        FlowMatching.TokenWeights(lossRegion, PackedMask(imgCond)), texts[captionPrefix + pair.Caption]);
                    if (bothSides)
                    {
                        var reversed = file.ReadFloat32(ReversedName);
                        example = example with { Reversed = (reversed, FlowMatching.TokenWeights(lossRegion, PackedMask(reversed))) };
                    }
                    examples.Add(example);
                    progress?.Report(new StageProgress("latents", "pairs", examples.Count, dataset.Pairs.Count));
                }
                log.WriteLine($"latents at resolution {buckets.Resolution}: {examples.Count} pairs, {encoded} encoded, {examples.Count - encoded} from the cache in {cacheDir}");
                atResolutions.Add(examples);
            }
        }
        finally
        {
            vae?.Dispose();
        }
        return atResolutions;
    }

    private const string ReversedName = "img_cond_reversed";

    /// <summary>The packed mask: the last 256 features of every conditioning token.</summary>
    private static HostTensor PackedMask(HostTensor imgCond)
    {
        int maskFeatures = imgCond.Shape[2] - 64;
        var mask = new HostTensor(1, imgCond.Shape[1], maskFeatures);
        for (int token = 0; token < imgCond.Shape[1]; token++)
            Array.Copy(imgCond.Data, token * imgCond.Shape[2] + 64, mask.Data, token * maskFeatures, maskFeatures);
        return mask;
    }

    /// <summary>A mask loaded as an RGB image in [−1, 1], back to [1, 1, H, W] in [0, 1] (mean of the channels).</summary>
    private static HostTensor MaskFromRgb(HostTensor rgb)
    {
        int height = rgb.Shape[2], width = rgb.Shape[3], plane = height * width;
        var mask = new HostTensor(1, 1, height, width);
        for (int i = 0; i < plane; i++)
            mask.Data[i] = Math.Clamp(((rgb.Data[i] + rgb.Data[plane + i] + rgb.Data[2 * plane + i]) / 3f + 1f) / 2f, 0f, 1f);
        return mask;
    }
}
