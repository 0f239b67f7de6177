namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// A tensor's elements as stored in a quantized <see cref="Format"/>, standing for the decoded values times
/// <see cref="Scale"/>: a power of two (exact to apply), 1 except for scaled fp8.
/// </summary>
public sealed record QuantizedBlocks(TensorFormat Format, byte[] Bytes, float Scale, long ElementCount)
{
    public float[] Decode()
    {
        var values = new float[checked((int)ElementCount)];
        TensorDecoder.Decode(Format, Bytes, values, Scale);
        return values;
    }
}
