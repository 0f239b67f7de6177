namespace InFluxEdit.Runtime.Tensors;

/// <summary>Element types a weights file may hold. Activations are always float32.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    F64,
}

public static class DTypeExtensions
{
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>The name safetensors headers use ("F32", "BF16", ...).</summary>
    public static string SafeTensorsName(this DType dtype) => dtype.ToString();

    public static bool TryParseSafeTensorsName(string name, out DType dtype)
    {
        switch (name)
        {
            case "F32": dtype = DType.F32; return true;
            case "F16": dtype = DType.F16; return true;
            case "BF16": dtype = DType.BF16; return true;
            case "F64": dtype = DType.F64; return true;
            default: dtype = default; return false;
        }
    }
}
