using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Runtime.Quantization;

/// <summary>
/// How a checkpoint's weight matrices are held on the backend (<c>--base-precision</c>). Without one, float tensors go
/// up as stored and quantized ones are decoded to float32 at load. With one, matrices of linear layers (see
/// <see cref="QuantizationPlan"/> for which tensors count and the fallbacks of K-quants) are held in
/// <see cref="Format"/>, or in each file tensor's own quantization when Format is null ("keep"); quantized ones stay in
/// their blocks on the backend (dequantized panel by panel inside the products) unless <see cref="DecodeAtLoad"/>.
/// A tensor already stored in the requested format keeps its bytes: nothing is quantized twice.
/// </summary>
public sealed record BasePrecision(TensorFormat? Format, bool DecodeAtLoad = false)
{
    /// <summary>Each quantized tensor of the file stays as stored (a GGUF's Q4_K stays Q4_K, an fp8 checkpoint fp8).</summary>
    public static BasePrecision Keep { get; } = new((TensorFormat?)null);

    /// <summary>The names <see cref="Parse"/> takes, for help texts and errors.</summary>
    public const string OptionNames = "keep, f32, bf16, fp8, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k";

    /// <summary>Reads an option value: "keep" or a format; null text means none (the default).</summary>
    public static BasePrecision? Parse(string? text, string option = "--base-precision")
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        if (text.Trim().Equals("keep", StringComparison.OrdinalIgnoreCase)) return Keep;
        if (!TensorFormats.TryParseOption(text, out TensorFormat format) || format == TensorFormat.F64)
            throw new ArgumentException($"{option} '{text}' is not a precision this build can hold weights in; choose one of {OptionNames}");
        return new BasePrecision(format);
    }

    /// <summary>
    /// The format <paramref name="parameter"/>, stored as <paramref name="stored"/>, is held in: a float dtype's format, a
    /// quantized format, or null to load it as now. A weight of the model's "unquantized" layers is never quantized here; a
    /// file that stores it quantized still has it held so under "keep". One that an op other than a product reads (an
    /// embedding table) is never held in quantized blocks, which only products can read.
    /// </summary>
    public TensorFormat? FormatFor(TensorFormat stored, ParameterInfo parameter)
    {
        int[] shape = parameter.Shape;
        TensorFormat? held = Format switch
        {
            null => stored.AsDType() == null && shape.Length >= 2 ? stored : null,
            { } requested when requested.AsDType() != null => shape.Length >= 2 ? requested : null,
            { } requested => parameter.Unquantized ? null : QuantizationPlan.FormatFor(requested, shape),
        };
        return held is { } format && format.AsDType() == null && parameter.ReadOutsideProducts ? null : held;
    }

    public override string ToString() => Format?.ToString().ToLowerInvariant() ?? "keep";
}
