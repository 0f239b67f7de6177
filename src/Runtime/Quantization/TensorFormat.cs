using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// How a weights file stores a tensor's elements: a plain float dtype, an 8-bit float, or one of ggml's block
/// quantizations (a fixed number of elements packed into a fixed number of bytes along the innermost dimension).
/// </summary>
public enum TensorFormat
{
    F32,
    F16,
    BF16,
    F64,
    F8_E4M3,
    F8_E5M2,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

public static class TensorFormats
{
    /// <summary>Elements per ggml super-block (QK_K) of the K-quants.</summary>
    public const int SuperBlock = 256;

    /// <summary>Elements per block of the original ggml quantizations (QK4_0 … QK8_0).</summary>
    public const int Block = 32;

    /// <summary>Elements one block holds: 1 for the element-wise formats.</summary>
    public static int BlockElements(this TensorFormat format) => format switch
    {
        TensorFormat.Q8_0 or TensorFormat.Q4_0 or TensorFormat.Q4_1 or TensorFormat.Q5_0 or TensorFormat.Q5_1 => Block,
        TensorFormat.Q2_K or TensorFormat.Q3_K or TensorFormat.Q4_K or TensorFormat.Q5_K or TensorFormat.Q6_K => SuperBlock,
        _ => 1,
    };

    /// <summary>Bytes one block takes (ggml-common.h's block_* structs, which have no padding).</summary>
    public static int BlockBytes(this TensorFormat format) => format switch
    {
        TensorFormat.F32 => 4,
        TensorFormat.F16 or TensorFormat.BF16 => 2,
        TensorFormat.F64 => 8,
        TensorFormat.F8_E4M3 or TensorFormat.F8_E5M2 => 1,
        TensorFormat.Q8_0 => 2 + 32,
        TensorFormat.Q4_0 => 2 + 16,
        TensorFormat.Q4_1 => 2 + 2 + 16,
        TensorFormat.Q5_0 => 2 + 4 + 16,
        TensorFormat.Q5_1 => 2 + 2 + 4 + 16,
        TensorFormat.Q2_K => 16 + 64 + 2 + 2,
        TensorFormat.Q3_K => 32 + 64 + 12 + 2,
        TensorFormat.Q4_K => 2 + 2 + 12 + 128,
        TensorFormat.Q5_K => 2 + 2 + 12 + 32 + 128,
        TensorFormat.Q6_K => 128 + 64 + 16 + 2,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    public static bool IsBlockQuantized(this TensorFormat format) => format.BlockElements() > 1;

    /// <summary>The plain dtype a backend can take the stored bytes as, or null when they must be decoded first.</summary>
    public static DType? AsDType(this TensorFormat format) => format switch
    {
        TensorFormat.F32 => DType.F32,
        TensorFormat.F16 => DType.F16,
        TensorFormat.BF16 => DType.BF16,
        TensorFormat.F64 => DType.F64,
        _ => null,
    };

    public static TensorFormat ToFormat(this DType dtype) => dtype switch
    {
        DType.F32 => TensorFormat.F32,
        DType.F16 => TensorFormat.F16,
        DType.BF16 => TensorFormat.BF16,
        DType.F64 => TensorFormat.F64,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>
    /// Whether a tensor of this shape can be stored in the format: block formats pack along the innermost dimension,
    /// so its size must be a whole number of blocks (as ggml requires).
    /// </summary>
    public static bool Fits(this TensorFormat format, IReadOnlyList<int> shape) =>
        format.BlockElements() == 1 || shape.Count > 0 && shape[^1] % format.BlockElements() == 0;

    /// <summary>Bytes a tensor of <paramref name="shape"/> takes, or null when it does not fit (<see cref="Fits"/>) or overflows a long.</summary>
    public static long? ByteCount(this TensorFormat format, IReadOnlyList<int> shape)
    {
        if (!format.Fits(shape)) return null;
        try
        {
            long blocks = 1;
            foreach (int dim in shape) blocks = checked(blocks * dim);
            return checked(blocks / format.BlockElements() * format.BlockBytes());
        }
        catch (OverflowException)
        {
            return null;
        }
    }

    /// <summary>Reads a format by its lower-case name, as <c>--to</c> options take it ("fp8" is E4M3, the one checkpoints use).</summary>
    public static bool TryParseOption(string text, out TensorFormat format)
    {
        string name = text.Trim().ToUpperInvariant();
        switch (name)
        {
            case "FP8" or "FP8-E4M3" or "F8": format = TensorFormat.F8_E4M3; return true;
            case "FP8-E5M2": format = TensorFormat.F8_E5M2; return true;
            case "FP32": format = TensorFormat.F32; return true;
            case "FP16": format = TensorFormat.F16; return true;
        }
        return Enum.TryParse(name, ignoreCase: false, out format) && Enum.IsDefined(format) && !int.TryParse(name, out _);
    }

    /// <summary>The formats a file can be written in, for help texts and errors.</summary>
    public static string OptionNames => "f32, bf16, f16, fp8 (E4M3), fp8-e5m2, q8_0, q5_1, q5_0, q4_1, q4_0, q6_k, q5_k, q4_k, q3_k, q2_k";
}
