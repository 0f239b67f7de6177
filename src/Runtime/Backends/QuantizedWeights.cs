using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>The checks every backend makes on a weight it is asked to keep quantized.</summary>
public static class QuantizedWeights
{
    /// <summary>A [out, in] matrix whose rows are whole blocks of the format, with the bytes that shape takes.</summary>
    public static void RequireLinearShape(int[] shape, QuantizedBlocks weight)
    {
        if (shape.Length != 2)
            throw new ArgumentException($"only a linear layer's [out, in] weight can be kept {weight.Format}; {HostTensor.FormatShape(shape)} must be decoded at load");
        if (!weight.Format.Fits(shape))
            throw new ArgumentException(
                $"a {weight.Format} weight needs rows of whole {weight.Format.BlockElements()}-value blocks; {HostTensor.FormatShape(shape)} has rows of {shape[1]}: " +
                "keep this weight float or choose a format with smaller blocks (q8_0, q4_0, fp8)");
        if (HostTensor.ElementCount(shape) != weight.ElementCount || weight.Format.ByteCount(shape) != weight.Bytes.LongLength)
            throw new ArgumentException(
                $"{weight.Bytes.LongLength} bytes of {weight.Format} for {weight.ElementCount} values do not make a {HostTensor.FormatShape(shape)} weight ({weight.Format.ByteCount(shape)} bytes)");
        if (!(weight.Scale > 0 && float.IsFinite(weight.Scale)))
            throw new ArgumentException($"a quantized weight's scale must be a positive finite number, got {weight.Scale}");
    }
}
