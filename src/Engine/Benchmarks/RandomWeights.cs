using System.Text.Json;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.IO;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Benchmarks;

/// <summary>
/// Seeded random weights for a compiled model: weight matrices ~ U(−√3, √3)/√fan_in (unit-variance activations
/// through the network), norm scales near 1, small biases. Fast enough for the 12B model (a counter-based hash
/// per element, in parallel), and stored in the model's checkpoint dtype.
/// </summary>
public static class RandomWeights
{
    public static HostTensor Generate(ParameterInfo parameter, int seed)
    {
        var t = new HostTensor(parameter.Shape);
        bool isNormScale = parameter.Name.EndsWith(".scale", StringComparison.Ordinal);
        float amplitude = parameter.Shape.Length == 2 ? (float)Math.Sqrt(3.0 / parameter.Shape[1]) : 0.02f;
        float center = isNormScale ? 1f : 0f;
        ulong stream = (ulong)seed * 0x9E3779B97F4A7C15UL ^ StableHash(parameter.Name);
        var data = t.Data;
        Parallel.For(0, (data.Length + 65535) / 65536, chunk =>
        {
            int end = Math.Min(data.Length, (chunk + 1) * 65536);
            for (int i = chunk * 65536; i < end; i++)
            {
                ulong z = Mix(stream + (ulong)i * 0x9E3779B97F4A7C15UL);
                float unit = (z >> 40) * (1f / (1 << 24)) * 2f - 1f;
                data[i] = center + amplitude * unit;
            }
        });
        return t;
    }

    /// <summary>SplitMix64's finaliser: a counter in, 64 well-mixed bits out.</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>FNV-1a of the name: string.GetHashCode is randomised per process, and the same seed must give the same weights in every run.</summary>
    private static ulong StableHash(string name)
    {
        ulong hash = 0xCBF29CE484222325UL;
        foreach (char c in name) hash = (hash ^ c) * 0x100000001B3UL;
        return hash;
    }

    /// <summary>
    /// Generates and uploads the weights one tensor at a time; with a <paramref name="precision"/> each matrix is quantized
    /// as it is made and held so (as a checkpoint loaded with that --base-precision would be), so the float32 model
    /// never exists whole: the 12B transformer fits a machine with a fraction of its 48 GB.
    /// </summary>
    public static IReadOnlyDictionary<string, DeviceTensor> Upload(ModelDescriptor model, IBackend backend, int seed,
        IProgress<(int Done, int Total)>? progress = null, BasePrecision? precision = null)
    {
        var weights = new Dictionary<string, DeviceTensor>();
        try
        {
            foreach (var parameter in model.Parameters)
            {
                TensorFormat? held = precision?.FormatFor(parameter.DType.ToFormat(), parameter);
                weights[parameter.Name] = held switch
                {
                    { } blocks when blocks.IsBlockQuantized() && parameter.Shape.Length == 2 && !precision!.DecodeAtLoad =>
                        backend.UploadQuantizedWeight(parameter.Shape, new QuantizedBlocks(blocks, GenerateBlocks(parameter, blocks, seed), 1f,
                            HostTensor.ElementCount(parameter.Shape))),
                    { } format => WeightLoader.Hold(backend, parameter.Shape, Generate(parameter, seed).Data, format, precision!.DecodeAtLoad),
                    null => backend.UploadWeight(parameter.Shape, parameter.DType, DTypeEncoding.Encode(Generate(parameter, seed).Data, parameter.DType)),
                };
                progress?.Report((weights.Count, model.Parameters.Count));
            }
        }
        catch
        {
            foreach (var uploaded in weights.Values) uploaded.Dispose();
            throw;
        }
        return weights;
    }

    /// <summary>
    /// A weight matrix made directly in a block format: random codes (and sub-block scales), then per block the float16
    /// factors every decoded value is linear in (d, and the min or dmin where the format has one) chosen so the block has
    /// mean 0 and the RMS of the float weights' U(−a, a). Quantizing float weights instead would cost more than the
    /// benchmark (ggml's K-quant search is ~100 operations per value: an hour for 12B on two cores).
    /// </summary>
    public static byte[] GenerateBlocks(ParameterInfo parameter, TensorFormat format, int seed)
    {
        int blockElements = format.BlockElements(), blockBytes = format.BlockBytes();
        int[] factors = FactorOffsets(format);
        long blocks = HostTensor.ElementCount(parameter.Shape) / blockElements;
        var bytes = new byte[checked(blocks * blockBytes)];
        double targetRms = Math.Sqrt(3.0 / parameter.Shape[1]) / Math.Sqrt(3);
        ulong stream = (ulong)seed * 0x9E3779B97F4A7C15UL ^ StableHash(parameter.Name);
        const int ChunkBlocks = 1024;
        Parallel.For(0, (blocks + ChunkBlocks - 1) / ChunkBlocks, chunk =>
        {
            var linear = new float[blockElements];
            var offset = new float[blockElements];
            for (long b = chunk * ChunkBlocks; b < Math.Min(blocks, (chunk + 1) * ChunkBlocks); b++)
            {
                Span<byte> block = bytes.AsSpan(checked((int)(b * blockBytes)), blockBytes);
                for (int i = 0; i < blockBytes; i += 8)
                {
                    ulong word = Mix(stream + ((ulong)b * (ulong)blockBytes + (ulong)i) * 0x9E3779B97F4A7C15UL);
                    for (int j = 0; j < 8 && i + j < blockBytes; j++) block[i + j] = (byte)(word >> (8 * j));
                }
                // The values are d·linear + e·offset (offset 0 where the format has one factor): decode each part alone.
                SetFactors(block, factors, 1f, 0f);
                TensorDecoder.Decode(format, block, linear);
                if (factors.Length > 1)
                {
                    SetFactors(block, factors, 0f, 1f);
                    TensorDecoder.Decode(format, block, offset);
                }
                // e = ratio·d cancels the mean where the offset part allows it (a huge ratio would overflow float16).
                double meanOffset = offset.Average();
                double ratio = Math.Abs(meanOffset) > 1e-3 ? -linear.Average() / meanOffset : 0;
                double sumSquares = 0;
                for (int i = 0; i < blockElements; i++)
                {
                    double v = linear[i] + ratio * offset[i];
                    sumSquares += v * v;
                }
                double rms = Math.Sqrt(sumSquares / blockElements);
                // A random sign per block cancels what the codes lean to (Q4_0's run from −8 to 7).
                double d = (rms > 0 ? targetRms / rms : 0) * ((Mix(stream ^ (ulong)b) & 1) == 0 ? 1 : -1);
                SetFactors(block, factors, (float)d, (float)(d * ratio));
            }
        });
        return bytes;
    }

    /// <summary>Where a block keeps its float16 factors (ggml-common.h's block_* structs): d first, then the min or dmin.</summary>
    private static int[] FactorOffsets(TensorFormat format) => format switch
    {
        TensorFormat.Q8_0 or TensorFormat.Q4_0 or TensorFormat.Q5_0 => [0],
        TensorFormat.Q4_1 or TensorFormat.Q5_1 or TensorFormat.Q4_K or TensorFormat.Q5_K => [0, 2],
        TensorFormat.Q2_K => [80, 82],
        TensorFormat.Q3_K => [108],
        TensorFormat.Q6_K => [208],
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "not a block format"),
    };

    private static void SetFactors(Span<byte> block, int[] offsets, float d, float e)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteHalfLittleEndian(block.Slice(offsets[0], 2), (Half)d);
        if (offsets.Length > 1) System.Buffers.Binary.BinaryPrimitives.WriteHalfLittleEndian(block.Slice(offsets[1], 2), (Half)e);
    }

    /// <summary>Writes float32 weights with the model's params as __metadata__.config (as BFL checkpoints carry them).</summary>
    public static void Write(ModelDescriptor model, string path, int seed)
    {
        var tensors = model.Parameters.Select(p => new KeyValuePair<string, HostTensor>(p.Name, Generate(p, seed)));
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "bfl", ["config"] = ConfigJson(model) });
    }

    /// <summary>The model's params as one JSON object (each value is JSON already: numbers, booleans, lists).</summary>
    private static string ConfigJson(ModelDescriptor model) =>
        "{" + string.Join(", ", model.Params.Select(p => $"{JsonSerializer.Serialize(p.Key)}: {p.Value}")) + "}";

    /// <summary>
    /// What another implementation needs to make the same weights without a weight file (bench/pytorch_flux_forward.py
    /// --random-weights regenerates them with <see cref="Generate"/>'s hash, on its device): the seed, the model's params,
    /// every parameter's name, shape and checkpoint dtype in order, and the LoRA adapters a training step puts on them.
    /// Under a megabyte where the 12B model's float32 weights would be 48 GB.
    /// </summary>
    public static void WriteManifest(ModelDescriptor model, string path, int seed, IReadOnlyList<LoraTarget> loraTargets, int rank, float scale)
    {
        var parameters = model.Parameters.Select(p => new { name = p.Name, shape = p.Shape, dtype = p.DType.ToString() });
        var targets = loraTargets.Select(t => new { module = t.Module.Module, row_offset = t.RowOffset, rows = t.Rows });
        var manifest = new
        {
            seed, model = model.Name, config = System.Text.Json.Nodes.JsonNode.Parse(ConfigJson(model)), parameters,
            lora = new { rank, scale, targets },
        };
        AtomicFile.Write(path, stream => JsonSerializer.Serialize(stream, manifest));
    }
}
