namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// Which tensors of a model a requested quantization applies to, and in which format: weight matrices (rank ≥ 2) are
/// quantized; vectors (biases, norm scales) stay float, as in city96's GGUF and ComfyUI's fp8 checkpoints. A K-quant
/// needs rows of whole 256-element super-blocks; where a row is not, the tensor falls back to the 32-element format
/// llama.cpp falls back to (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0), and to float where even that does not fit.
/// </summary>
public static class QuantizationPlan
{
    /// <summary>The format a tensor of <paramref name="shape"/> gets when <paramref name="requested"/> is asked for, or null to keep it float.</summary>
    public static TensorFormat? FormatFor(TensorFormat requested, IReadOnlyList<int> shape)
    {
        if (shape.Count < 2 || requested.AsDType() != null) return null;
        if (requested.Fits(shape)) return requested;
        TensorFormat? fallback = requested switch
        {
            TensorFormat.Q4_K => TensorFormat.Q5_0,
            TensorFormat.Q5_K => TensorFormat.Q5_1,
            TensorFormat.Q6_K => TensorFormat.Q8_0,
            TensorFormat.Q2_K or TensorFormat.Q3_K => TensorFormat.Q4_0,
            _ => null,
        };
        return fallback is { } format && format.Fits(shape) ? format : null;
    }

    /// <summary>
    /// The weight a model computes with when it is stored in <paramref name="format"/>: quantized (<see cref="Quantize"/>),
    /// then decoded.
    /// </summary>
    public static float[] RoundTrip(TensorFormat format, float[] values) => Quantize(format, values).Decode();

    /// <summary>
    /// Stores <paramref name="values"/> in <paramref name="format"/>. Block formats carry their own scales. fp8 gets one
    /// per-tensor power-of-two scale that puts the largest magnitude at the top of the format's range, as scaled fp8
    /// checkpoints do: weights (typically |w| &lt; 0.1) would otherwise fall among E4M3's subnormals (below 2^-6) and lose
    /// most of their bits. A power of two is exact to apply and undo.
    /// </summary>
    public static QuantizedBlocks Quantize(TensorFormat format, ReadOnlySpan<float> values)
    {
        float maxFinite = format switch
        {
            TensorFormat.F8_E4M3 => 448f,
            TensorFormat.F8_E5M2 => 57344f,
            _ => 0f,
        };
        float amax = 0;
        foreach (float v in values) amax = Math.Max(amax, Math.Abs(v));
        if (maxFinite == 0 || amax == 0 || !float.IsFinite(amax))
            return new QuantizedBlocks(format, TensorEncoder.Encode(format, values), 1f, values.Length);

        int exponent = (int)Math.Ceiling(Math.Log2(amax / maxFinite));
        var scaled = new float[values.Length];
        for (int i = 0; i < values.Length; i++) scaled[i] = MathF.ScaleB(values[i], -exponent);
        return new QuantizedBlocks(format, TensorEncoder.Encode(format, scaled), MathF.ScaleB(1f, exponent), values.Length);
    }
}
