using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Runtime.Backends.Planning;

/// <summary>
/// The settings of the ILGPU backend a <see cref="MemoryPlanBackend"/> plans for: everything that decides which
/// scratch an op rents (cuBLAS or the ILGPU kernels, flash attention or not, the budgets and launch targets that size
/// chunks) and whether weights are offloaded.
/// </summary>
/// <param name="Precision">The backend's --precision: bf16 stores forward activations and some scratch as bf16 words.</param>
/// <param name="CuBlas">Products and attention run on cuBLAS (CUDA with libcublas loaded); false: the ILGPU kernels.</param>
/// <param name="IsCuda">A CUDA accelerator: --attention auto may pick flash there (bf16 precision, compute 8.0+ assumed).</param>
/// <param name="Attention">The --attention choice.</param>
/// <param name="ColumnSumThreads">Threads a column sum aims at (sizes its partials).</param>
/// <param name="Multiprocessors">The device's multiprocessors (sizes GroupNorm's partials).</param>
/// <param name="OffloadBudgetBytes">With --offload, the device arena the weight matrices stream through; null: held on the device.</param>
public sealed record PlannedDevice(
    GpuPrecision Precision,
    bool CuBlas,
    bool IsCuda,
    AttentionKernelChoice Attention,
    int ColumnSumThreads,
    int Multiprocessors,
    long? OffloadBudgetBytes = null,
    long AttentionScratchBudgetBytes = 2L << 30,
    long ConvScratchFloats = 1L << 26,
    int GroupNormElementsPerBlock = 1 << 16)
{
    /// <summary>
    /// A CUDA GPU with cuBLAS, as `--device cuda` runs. Multiprocessors only size GroupNorm's few partials (kilobytes);
    /// 128 is an RTX 4090's count.
    /// </summary>
    public static PlannedDevice Cuda(GpuPrecision precision, AttentionKernelChoice attention = AttentionKernelChoice.Auto, long? offloadBudgetBytes = null) =>
        new(precision, CuBlas: true, IsCuda: true, attention, ColumnSumThreads: IlgpuBackend.GpuColumnSumThreads, Multiprocessors: 128,
            offloadBudgetBytes);

    /// <summary>The settings of an existing backend (the simulator in tests), so a plan can be checked against its count.</summary>
    public static PlannedDevice Of(IlgpuBackend backend) =>
        new(backend.Precision, backend.UsesCuBlas && backend.TrainingGemmOnCuBlasEnabled && backend.AttentionOnCuBlasEnabled,
            backend.Accelerator.AcceleratorType == ILGPU.Runtime.AcceleratorType.Cuda, backend.AttentionKernel,
            backend.ColumnSumThreadTarget, backend.Accelerator.NumMultiprocessors, backend.Offload?.BudgetBytes,
            backend.AttentionScratchBudgetBytes, backend.ConvScratchFloats, backend.GroupNormElementsPerBlock);

    /// <summary>Whether attention with heads of <paramref name="headDim"/> runs the flash kernel (as IlgpuBackend decides).</summary>
    public bool UsesFlashAttention(int headDim) => Attention switch
    {
        AttentionKernelChoice.Flash => IlgpuBackend.FlashHeadLimitation(headDim) is not string reason
            ? true
            : throw new ArgumentException($"--attention flash: {reason}; use --attention auto"),
        AttentionKernelChoice.Auto => IsCuda && Precision == GpuPrecision.BFloat16 && IlgpuBackend.FlashHeadLimitation(headDim) is null,
        _ => false,
    };
}
