using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

using Unary = Action<Index1D, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>;
using Binary = Action<Index1D, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>;

/// <summary>
/// The text encoders' kernels of one accelerator as typed launch delegates, each compiled on first use, like
/// <see cref="GpuKernels"/> (kept apart so a transformer that never embeds tokens compiles none of them).
/// </summary>
internal sealed class TextKernelSet
{
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>>> embeddingFloat32;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<ushort>>> embeddingBFloat16, embeddingFloat16;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>>> addPosition;
    private readonly Lazy<Unary> quickGelu;
    private readonly Lazy<Binary> multiply;
    private readonly Lazy<Action<KernelConfig, int, float, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>> affineLayerNorm;
    private readonly Lazy<Action<Index1D, int, int, int, StridedMatrix, ArrayView<float>, ArrayView<int>, ArrayView<float>>> relativePositionBias;
    private readonly Lazy<Action<Index1D, int, int, int, ArrayView<float>, StridedMatrix, ArrayView<float>, int, int, int>> maskScores;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>> gatherArgmaxRows;

    public TextKernelSet(Accelerator accelerator)
    {
        Lazy<T> Auto<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);
        var a = accelerator;
        embeddingFloat32 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>>(TextKernels.EmbeddingFloat32));
        embeddingBFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<ushort>>(TextKernels.EmbeddingBFloat16));
        embeddingFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<ushort>>(TextKernels.EmbeddingFloat16));
        addPosition = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>>(TextKernels.AddPosition));
        quickGelu = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>(TextKernels.QuickGelu));
        multiply = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>(TextKernels.Multiply));
        affineLayerNorm = Auto(() => a.LoadStreamKernel<int, float, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(TextRowKernels.AffineLayerNorm));
        relativePositionBias = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, StridedMatrix, ArrayView<float>, ArrayView<int>, ArrayView<float>>(TextKernels.RelativePositionBias));
        maskScores = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, ArrayView<float>, StridedMatrix, ArrayView<float>, int, int, int>(TextKernels.MaskScores));
        gatherArgmaxRows = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>>(TextKernels.GatherArgmaxRows));
    }

    public Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>> EmbeddingFloat32 => embeddingFloat32.Value;
    public Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<ushort>> EmbeddingBFloat16 => embeddingBFloat16.Value;
    public Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<ushort>> EmbeddingFloat16 => embeddingFloat16.Value;
    public Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>> AddPosition => addPosition.Value;
    public Unary QuickGelu => quickGelu.Value;
    public Binary Multiply => multiply.Value;
    public Action<KernelConfig, int, float, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> AffineLayerNorm => affineLayerNorm.Value;
    public Action<Index1D, int, int, int, StridedMatrix, ArrayView<float>, ArrayView<int>, ArrayView<float>> RelativePositionBias => relativePositionBias.Value;
    public Action<Index1D, int, int, int, ArrayView<float>, StridedMatrix, ArrayView<float>, int, int, int> MaskScores => maskScores.Value;
    public Action<Index1D, int, int, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>, StridedMatrix, ArrayView<float>> GatherArgmaxRows => gatherArgmaxRows.Value;
}
