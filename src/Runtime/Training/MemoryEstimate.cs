using System.Globalization;
using System.Text.RegularExpressions;
using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Runtime.Training;

/// <summary>A part of what a command will hold in memory, for the message when it does not fit.</summary>
public sealed record MemoryNeed(string What, long Bytes);

/// <summary>
/// What a command needs in memory, from the shapes alone (the model's parameters, the tokens and pixels it will run),
/// so that a size that cannot fit is refused before anything large is allocated. The factors are upper bounds fitted
/// to the CPU backend's measured peaks (bench train's count, a train run's peak working set): a linear layer keeps its
/// input and output per token for the backward pass (attention is blockwise, never tokens² per head), a convolution
/// unfolds nine input channels per pixel.
/// </summary>
public static class MemoryEstimate
{
    private const int FloatBytes = sizeof(float);

    /// <summary>Weights as the CPU holds them (float32).</summary>
    public static long Weights(ModelDescriptor model) =>
        model.Parameters.Sum(p => p.Shape.Aggregate(1L, (n, d) => n * d)) * FloatBytes;

    /// <summary>
    /// Activations a training step keeps per token: every linear layer's input and output. With per-block
    /// recomputation only about a block's worth (and the block boundaries) stay: three blocks' share of the total.
    /// </summary>
    public static long TrainingActivationsPerToken(ModelDescriptor model, bool recompute)
    {
        long perToken = model.Parameters.Where(p => p.Shape.Length == 2).Sum(p => (long)p.Shape[0] + p.Shape[1]) * FloatBytes;
        if (!recompute) return perToken;
        // Blocks are the numbered module lists ("blocks.3.…"): each distinct prefix up to its index is one block.
        int blocks = model.Parameters.Select(p => BlockPrefix.Match(p.Name)).Where(m => m.Success).Select(m => m.Value).Distinct().Count();
        return blocks == 0 ? perToken : Math.Min(perToken, 3 * perToken / blocks);
    }

    private static readonly Regex BlockPrefix = new(@"^.*?\.\d+\.", RegexOptions.CultureInvariant);

    /// <summary>An autoencoder's encode or decode at full resolution: its widest full-resolution convolution (the one that reads the image's 3 channels), unfolded.</summary>
    public static long AutoencoderPerPixel(ModelDescriptor autoencoder)
    {
        int channels = autoencoder.Parameters.Where(p => p.Shape.Length == 4 && (p.Shape[1] == 3 || p.Shape[0] == 3))
            .Select(p => p.Shape[1] == 3 ? p.Shape[0] : p.Shape[1]).DefaultIfEmpty(0).Max();
        return 8L * channels * FloatBytes;
    }

    /// <summary>
    /// What <paramref name="backend"/> can hold: the host's free memory for the CPU backend; null (not checked) for a
    /// GPU, whose activations live in device memory this estimate does not model (weights there may be bf16).
    /// </summary>
    public static long? AvailableBytes(Backends.IBackend backend) => backend is Backends.Cpu.CpuBackend ? AvailableBytes() : null;

    /// <summary>
    /// The memory this machine can give: Linux's MemAvailable (free plus reclaimable caches), else what the GC says the
    /// process may use; null when neither is known.
    /// </summary>
    public static long? AvailableBytes()
    {
        try
        {
            if (File.Exists("/proc/meminfo"))
                foreach (string line in File.ReadLines("/proc/meminfo"))
                    if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                    {
                        string[] parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                        if (parts.Length >= 2 && long.TryParse(parts[1], CultureInfo.InvariantCulture, out long kib)) return kib * 1024;
                    }
        }
        catch (IOException)
        {
        }
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return total > 0 ? total - GC.GetTotalMemory(false) : null;
    }

    /// <summary>
    /// Refuses (<see cref="InsufficientMemoryException"/>) when the needs exceed what is available, naming the parts and
    /// <paramref name="advice"/> (what the user can lower).
    /// </summary>
    public static void Require(string command, IReadOnlyList<MemoryNeed> needs, long? available, string advice)
    {
        long total = needs.Sum(n => n.Bytes);
        if (available is not long free || total <= free) return;
        throw new InsufficientMemoryException(
            $"{command} needs about {Gigabytes(total)} GB ({string.Join(", ", needs.Where(n => n.Bytes > 0).Select(n => $"{n.What} {Gigabytes(n.Bytes)} GB"))}); " +
            $"this machine has {Gigabytes(free)} GB free: {advice}");
    }

    /// <summary>The two stages of a training run: encoding the pairs' latents with the autoencoder, then the steps.</summary>
    /// <param name="transformerWeightBytes">What the transformer's weights take as loaded (quantized ones fewer); default float32.</param>
    public static void RequireForTraining(ModelDescriptor transformer, ModelDescriptor autoencoder, long pixels, long tokens,
        bool recompute, bool fullWeights, long? available, string advice, string recomputeAdvice, long? transformerWeightBytes = null)
    {
        long autoencoderWeights = Weights(autoencoder);
        Require("encoding the training images", [
            new MemoryNeed("the autoencoder's weights", autoencoderWeights),
            new MemoryNeed($"its activations at {pixels:N0} pixels", pixels * AutoencoderPerPixel(autoencoder)),
        ], available, advice);
        // Training in full keeps a gradient and AdamW's two moments beside every weight.
        long weights = (transformerWeightBytes ?? Weights(transformer)) * (fullWeights ? 4 : 1);
        Require("training", [
            new MemoryNeed(fullWeights ? "the transformer's weights, gradients and optimizer state" : "the transformer's weights", weights),
            new MemoryNeed($"its activations at {tokens:N0} tokens", tokens * TrainingActivationsPerToken(transformer, recompute)),
        ], available, recompute ? advice : $"{advice} or {recomputeAdvice}");
    }

    /// <summary>An edit: both models' weights, the autoencoder at the image's pixels and the transformer's forward at its tokens.</summary>
    public static void RequireForEditing(ModelDescriptor transformer, ModelDescriptor autoencoder, long pixels, long tokens, long? available, string advice,
        long? transformerWeightBytes = null) =>
        Require("editing", [
            new MemoryNeed("the models' weights", (transformerWeightBytes ?? Weights(transformer)) + Weights(autoencoder)),
            new MemoryNeed($"the autoencoder at {pixels:N0} pixels", pixels * AutoencoderPerPixel(autoencoder)),
            // A forward keeps no activations for a backward: at most about a block's, as recomputation does.
            new MemoryNeed($"the transformer at {tokens:N0} tokens", tokens * TrainingActivationsPerToken(transformer, recompute: true)),
        ], available, advice);

    public static string Gigabytes(long bytes) => (bytes / 1e9).ToString(bytes < 10e9 ? "0.0" : "0", CultureInfo.InvariantCulture);
}
