using System.Text.Json;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

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
                ulong z = stream + (ulong)i * 0x9E3779B97F4A7C15UL;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
                z ^= z >> 31;
                float unit = (z >> 40) * (1f / (1 << 24)) * 2f - 1f;
                data[i] = center + amplitude * unit;
            }
        });
        return t;
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
                var host = Generate(parameter, seed);
                weights[parameter.Name] = precision?.FormatFor(parameter.DType.ToFormat(), parameter.Shape) is { } format
                    ? WeightLoader.Hold(backend, parameter.Shape, host.Data, format, precision.DecodeAtLoad)
                    : backend.UploadWeight(parameter.Shape, parameter.DType, DTypeEncoding.Encode(host.Data, parameter.DType));
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

    /// <summary>Writes float32 weights with the model's params as __metadata__.config (as BFL checkpoints carry them).</summary>
    public static void Write(ModelDescriptor model, string path, int seed)
    {
        var tensors = model.Parameters.Select(p => new KeyValuePair<string, HostTensor>(p.Name, Generate(p, seed)));
        var config = "{" + string.Join(", ", model.Params.Select(p => $"{JsonSerializer.Serialize(p.Key)}: {p.Value}")) + "}";
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "bfl", ["config"] = config });
    }
}
