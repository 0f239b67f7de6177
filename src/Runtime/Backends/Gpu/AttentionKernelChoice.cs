namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>Which implementation <see cref="IlgpuBackend"/> runs attention (and its backward) on.</summary>
public enum AttentionKernelChoice
{
    /// <summary>
    /// Flash on CUDA in <see cref="GpuPrecision.BFloat16"/> where the head dim allows it (a multiple of 16 up to
    /// 128), cuBLAS otherwise: <see cref="GpuPrecision.Float32"/> keeps the exact float32 path, for parity.
    /// </summary>
    Auto,

    /// <summary>FlashAttention-2 on tensor cores (bf16 products, float32 softmax statistics, no score matrix).</summary>
    Flash,

    /// <summary>Two strided-batched cuBLAS products around a float32 score matrix: the reference path.</summary>
    CuBlas,

    /// <summary>The scalar float32 tiled ILGPU kernel (head dims up to 128).</summary>
    Tiled,
}
