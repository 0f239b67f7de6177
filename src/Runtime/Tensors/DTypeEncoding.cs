namespace InFluxEdit.Runtime.Tensors;

public static class DTypeEncoding
{
    /// <summary>float32 values as little-endian bytes of a float dtype (16-bit kinds rounded to nearest even).</summary>
    public static byte[] Encode(ReadOnlySpan<float> values, DType dtype)
    {
        byte[] raw = new byte[values.Length * dtype.SizeInBytes()];
        switch (dtype)
        {
            case DType.BF16:
                BFloat16.FromSingle(values, raw);
                break;
            case DType.F16:
                Float16.FromSingle(values, raw);
                break;
            case DType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(raw);
                break;
            default:
                var doubles = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(raw.AsSpan());
                for (int i = 0; i < values.Length; i++) doubles[i] = values[i];
                break;
        }
        return raw;
    }
}
