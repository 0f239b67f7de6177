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

    /// <summary>Why an op other than a linear layer's products refuses a weight held quantized, and what to do.</summary>
    public static string OnlyLinearReads(DeviceTensor tensor) =>
        $"{tensor} is a weight held quantized: only linear layers (and their backward products) read one; " +
        "load the model with its weights decoded (--base-precision f32) to run this op on it";

    /// <summary>
    /// A product's operand b that is a weight held quantized: it enters dx = dy·W or y = x·Wᵀ as a whole (View.Of(weight)),
    /// one product per batch of a, which is all a linear layer's backward asks of its frozen base weight.
    /// </summary>
    public static void RequireWholeProductOperand(DeviceTensor weight, View b, bool transposeA, bool sumOverBatches)
    {
        if (transposeA || sumOverBatches || b != View.Of(weight))
            throw new ArgumentException($"a weight held quantized ({weight}) enters only dx = dy·W or y = x·Wᵀ as a whole, one product per batch of a; " +
                "a weight that is trained or sliced must be loaded float (--base-precision f32)", nameof(b));
    }
}
