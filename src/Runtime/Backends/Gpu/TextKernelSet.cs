using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

using Unary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>;
using Binary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>;

/// <summary>
/// The text encoders' kernels of one accelerator as typed launch delegates, each compiled on first use, like
/// <see cref="GpuKernels"/> (kept apart so a transformer that never embeds tokens compiles none of them).
/// </summary>
internal sealed class TextKernelSet
{
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>> embeddingFloat32;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>>> embeddingBFloat16, embeddingFloat16;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>> addPosition;
    private readonly Lazy<Unary> quickGelu;
    private readonly Lazy<Binary> multiply;
    private readonly Lazy<Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int>> affineLayerNorm;
    private readonly Lazy<Action<Index1D, int, int, int, StridedMatrix, Elements, ArrayView<int>, ArrayView<float>>> relativePositionBias;
    private readonly Lazy<Action<Index1D, int, int, int, ArrayView<float>, StridedMatrix, Elements, int, int, int>> maskScores;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>> gatherArgmaxRows;

    public TextKernelSet(Accelerator accelerator)
    {
        Lazy<T> Auto<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);
        var a = accelerator;
        embeddingFloat32 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(TextKernels.EmbeddingFloat32));
        embeddingBFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>>(TextKernels.EmbeddingBFloat16));
        embeddingFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>>(TextKernels.EmbeddingFloat16));
        addPosition = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(TextKernels.AddPosition));
        quickGelu = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>(TextKernels.QuickGelu));
        multiply = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(TextKernels.Multiply));
        affineLayerNorm = Auto(() => a.LoadStreamKernel<int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int>(TextRowKernels.AffineLayerNorm));
        relativePositionBias = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, StridedMatrix, Elements, ArrayView<int>, ArrayView<float>>(TextKernels.RelativePositionBias));
        maskScores = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, ArrayView<float>, StridedMatrix, Elements, int, int, int>(TextKernels.MaskScores));
        gatherArgmaxRows = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(TextKernels.GatherArgmaxRows));
    }

    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>> EmbeddingFloat32 => embeddingFloat32.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>> EmbeddingBFloat16 => embeddingBFloat16.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>> EmbeddingFloat16 => embeddingFloat16.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>> AddPosition => addPosition.Value;
    public Unary QuickGelu => quickGelu.Value;
    public Binary Multiply => multiply.Value;
    public Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int> AffineLayerNorm => affineLayerNorm.Value;
    public Action<Index1D, int, int, int, StridedMatrix, Elements, ArrayView<int>, ArrayView<float>> RelativePositionBias => relativePositionBias.Value;
    public Action<Index1D, int, int, int, ArrayView<float>, StridedMatrix, Elements, int, int, int> MaskScores => maskScores.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements> GatherArgmaxRows => gatherArgmaxRows.Value;
}
