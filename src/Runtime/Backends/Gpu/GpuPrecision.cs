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
    /// The precision PyTorch runs FLUX in. A forward that only runs (not a training pass) stores its activations as
    /// bf16 (<see cref="IBackend.AllocateActivation"/>): every op reads bf16, computes in float32 (norms and softmax
    /// accumulate in float32) and rounds its result to bf16; products with bf16 weights run cublasGemmEx on the bf16
    /// views in place with float32 accumulation and bf16 output, attention multiplies bf16 q, k, v and probabilities.
    /// Training passes keep float32 activations; their bf16-weight products round inputs to bf16 for GemmEx, and
    /// float32 GEMMs may use TF32.
    /// </summary>
    BFloat16,
}
