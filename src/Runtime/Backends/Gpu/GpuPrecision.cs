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
    /// Activations are rounded to bf16 for the GEMM inputs so bf16 weights run on tensor cores (cublasGemmEx,
    /// float32 accumulation and output), the precision PyTorch runs FLUX in. Only differs from Float32 on the
    /// cuBLAS path with bf16 weights.
    /// </summary>
    BFloat16,
}
