using System.Diagnostics;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Text;

namespace InFluxEdit.Benchmarks;

// bench edit with --clip-model and --t5-model: the prompt's encoding is part of a whole edit's time.
public static partial class Benchmarks
{
    /// <summary>
    /// Encodes one prompt of seeded random token ids (CLIP's full length, <see cref="BenchSettings.TextTokens"/> for
    /// T5) with seeded random encoder weights, timing the two encodings (the weights are made untimed, as loading is)
    /// and releasing the encoders after, as <c>edit --prompt</c> does before the transformer loads. The peak is this
    /// phase's: the encoders' weights plus the backend's peak count while they ran.
    /// </summary>
    private static (TextConditioning Text, (string Names, double Seconds, long? PeakDeviceBytes)? Encoders) EncodeRandomPrompt(BenchSettings settings, IBackend backend,
        IProgress<StageProgress>? progress)
    {
        if (settings.ClipModel is null || settings.T5Model is null)
            throw new ArgumentException("bench edit times the text encoders as a pair: give both --clip-model and --t5-model (or neither)");
        var clipInfo = Compiled(settings.ClipModel);
        var t5Info = Compiled(settings.T5Model);
        foreach (var (info, family, option) in new[] { (clipInfo, TextEncoders.ClipFamily, "--clip-model"), (t5Info, TextEncoders.T5Family, "--t5-model") })
            if (info.Descriptor.Family != family)
                throw new ArgumentException($"{option} {info.Descriptor.Name} is a {info.Descriptor.Family} model, not a {family} one");
        var clipWeights = RandomWeights.Upload(clipInfo.Descriptor, backend, Seed, StageProgress.Of(progress, "random CLIP weights", "tensors"));
        var t5Weights = RandomWeights.Upload(t5Info.Descriptor, backend, Seed, StageProgress.Of(progress, "random T5 weights", "tensors"));
        try
        {
            var random = new Random(4);
            int[] Ids(Runtime.Models.ModelDescriptor encoder, int length) =>
                Enumerable.Range(0, length).Select(_ => random.Next(TextConditioning.IntParam(encoder, "vocab_size"))).ToArray();
            int[] clipIds = Ids(clipInfo.Descriptor, TextConditioning.IntParam(clipInfo.Descriptor, "max_position_embeddings"));
            int[] t5Ids = Ids(t5Info.Descriptor, settings.TextTokens);
            var statistics = backend as IMemoryStatistics;
            statistics?.ResetPeak();
            var clock = Stopwatch.StartNew();
            // Each encoding ends in a download, so the clock stops after the device's work.
            var (_, vec) = TextEncoders.EncodeClip(clipInfo.Create(backend, clipWeights), [clipIds]);
            var txt = TextEncoders.EncodeT5(t5Info.Create(backend, t5Weights), [t5Ids]);
            double seconds = clock.Elapsed.TotalSeconds;
            long? peak = clipWeights.Values.Concat(t5Weights.Values).Sum(w => w.StoredBytes) + statistics?.PeakAllocatedBytes;
            return (new TextConditioning(txt, vec), ($"{clipInfo.Descriptor.Name} + {t5Info.Descriptor.Name}", seconds, peak));
        }
        finally
        {
            foreach (var weight in clipWeights.Values.Concat(t5Weights.Values)) weight.Dispose();
        }
    }

    private static long? MaxOf(long? a, long? b) => a is null ? b : b is null ? a : Math.Max(a.Value, b.Value);

    private static HostTensor RandomTensor(Random random, params int[] shape)
    {
        var tensor = new HostTensor(shape);
        for (int i = 0; i < tensor.Data.Length; i++) tensor.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return tensor;
    }
}
