using InFluxEdit.Runtime.Quantization;

namespace InFluxEdit.Runtime.Gguf;

/// <summary>The metadata value types of GGUF (docs/gguf.md, gguf_metadata_value_type).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>ggml's tensor type ids (enum ggml_type) for the formats InFluxEdit reads, and the names of the others for errors.</summary>
public static class GgmlTypes
{
    public const uint GgufMagic = 0x46554747; // "GGUF" little-endian
    public const uint Version = 3;
    public const int DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";

    private static readonly Dictionary<uint, TensorFormat> Readable = new()
    {
        [0] = TensorFormat.F32, [1] = TensorFormat.F16, [2] = TensorFormat.Q4_0, [3] = TensorFormat.Q4_1,
        [6] = TensorFormat.Q5_0, [7] = TensorFormat.Q5_1, [8] = TensorFormat.Q8_0, [10] = TensorFormat.Q2_K,
        [11] = TensorFormat.Q3_K, [12] = TensorFormat.Q4_K, [13] = TensorFormat.Q5_K, [14] = TensorFormat.Q6_K,
        [28] = TensorFormat.F64, [30] = TensorFormat.BF16,
    };

    private static readonly Dictionary<uint, string> OtherNames = new()
    {
        [9] = "Q8_1", [15] = "Q8_K", [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL",
        [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS", [24] = "I8", [25] = "I16", [26] = "I32", [27] = "I64",
        [29] = "IQ1_M", [34] = "TQ1_0", [35] = "TQ2_0", [39] = "MXFP4",
    };

    public static bool TryGetFormat(uint type, out TensorFormat format) => Readable.TryGetValue(type, out format);

    public static uint TypeOf(TensorFormat format)
    {
        foreach (var (id, readable) in Readable)
            if (readable == format) return id;
        throw new ArgumentException($"GGUF has no tensor type for {format}; write it as safetensors or choose a ggml type.");
    }

    public static bool IsGgufFormat(TensorFormat format) => Readable.ContainsValue(format);

    public static string Describe(uint type) =>
        Readable.TryGetValue(type, out TensorFormat format) ? format.ToString()
        : OtherNames.TryGetValue(type, out string? name) ? name
        : $"unknown type {type}";

    public static string ReadableNames => string.Join(", ", Readable.Values.Select(f => f.ToString()));
}
