namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// A tensor's elements as stored in a quantized <see cref="Format"/>, standing for each decoded value times
/// <see cref="Scale"/> rounded to float32 (a positive finite factor; 1 except for fp8): our own fp8 quantizer picks a power of
/// two, a ComfyUI scaled fp8 checkpoint brings any float32 <c>scale_weight</c>, and its value is fp8 × scale in float32 as
/// ComfyUI computes it. Every consumer applies the scale to each decoded value (<see cref="TensorDecoder"/>), never to a
/// product, so the two agree bit for bit whatever the scale.
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
