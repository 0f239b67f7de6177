namespace InFluxEdit.Cli.Commands;

/// <summary>--base-precision, the same on edit, train and bench.</summary>
internal static class BasePrecisionOption
{
    public const string Name = "base-precision";

    public const string Help =
        "How the transformer's weight matrices are held in memory. Default: keep, as the checkpoint stores them: a float file's matrices in its dtype, an fp8 or GGUF file's " +
        "in the file's own quantization (so flux1-fill-dev-fp8.safetensors takes 12 GB, not 48; train --full decodes them, to train them in float32; fp8 and GGUF text encoders stay quantized too). fp8, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k: quantize each matrix at load " +
        "with our own quantizers (a tensor the file already holds in that format keeps its bytes). On the CPU a quantized matrix stays quantized and is dequantized " +
        "panel by panel inside each product (Q4_K: about 1/7 of float32's memory); on CUDA it stays quantized in GPU memory and each product dequantizes the whole " +
        "matrix into a reused scratch buffer (float32, or bf16 with --precision bf16), so the 12B model fits a 24 GB card at q8_0 or q4_k. bf16, f32: hold the matrices in that float type. " +
        "Biases and norm scales stay float, and so do the small input and output layers the model's schema lists as unquantized (FLUX: img_in, txt_in, time_in, vector_in, guidance_in, final_layer; under 1% of the 12B weights), as city96's FLUX GGUF files keep them; LoRA adapters (and img_in with --train-img-in) are trained in float32 beside a quantized base; edit keeps a LoRA's low-rank pieces unmerged in float32 beside a quantized base (its dense changes, such as LoKr or full diffs, are merged and quantized again).";
}
