namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>How <see cref="IlgpuBackend.Linear"/> multiplies by 16-bit (bf16/f16) weights.</summary>
public enum GpuPrecision
{
    /// <summary>
    /// Activations stay float32 and 16-bit weights are widened exactly to float32, so results match the CPU
    /// backend up to summation order. The default: parity first.
    /// </summary>
    Float32,

    /// <summary>
    /// The precision PyTorch runs FLUX in. Forwards and training passes store their activations (and a training pass
    /// its activation gradients) as bf16 (<see cref="IBackend.AllocateActivation"/>): every op reads bf16, computes in
    /// float32 (norms, softmax and reductions accumulate in float32) and rounds its result to bf16; products run
    /// cublasGemmEx on bf16 views in place with float32 accumulation, a small float32 operand beside them (a LoRA
    /// factor) rounded to bf16 as autocast does, and a trained weight's gradient written in float32; attention multiplies
    /// bf16 q, k, v and probabilities. Parameters, their gradients and optimizer state stay float32, as do the values a
    /// model's generated code allocates float32 (the residual stream, per-sample vectors); float32 GEMMs may use TF32.
    /// </summary>
    BFloat16,
}
