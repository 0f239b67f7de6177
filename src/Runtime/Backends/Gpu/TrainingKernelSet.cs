using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

using Binary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>;
using ChunkedGradient = Action<Index1D, ColumnChunks, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>;

/// <summary>
/// The training kernels of one accelerator as typed launch delegates, each compiled on first use (like
/// <see cref="GpuKernels"/>; kept apart so inference never compiles them).
/// </summary>
internal sealed class TrainingKernelSet
{
    private readonly Lazy<Binary> siluBackward, geluTanhBackward;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>> applyRopeBackward;
    private readonly Lazy<Action<Index1D, int, float, StridedMatrix, Elements>> fill, scaleInPlace;
    private readonly Lazy<Action<Index1D, AdamWFactors, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>> adamW;
    private readonly Lazy<Action<Index1D, ColumnChunks, StridedMatrix, Elements, ArrayView<float>>> sumRowsPartials;
    private readonly Lazy<ChunkedGradient> modulateBackwardPartials, gatedResidualBackwardPartials;
    private readonly Lazy<Action<Index1D, ColumnChunks, int, float, StridedMatrix, Elements, ArrayView<float>>> finishColumnSums;
    private readonly Lazy<Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>> layerNormBackward;
    private readonly Lazy<Action<KernelConfig, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>> rmsNormBackward;
    private readonly Lazy<Action<KernelConfig, int, float, ArrayView<float>, ArrayView<float>>> softmaxBackwardRows;
    private readonly Lazy<Action<KernelConfig, long, int, StridedMatrix, Elements, ArrayView<double>>> sumOfSquaresPartials;
    private readonly Lazy<Action<KernelConfig, GemmShape, GemmOperand, Elements, GemmOperand, Elements, GemmOperand, Elements>> generalGemm;

    public TrainingKernelSet(Accelerator accelerator)
    {
        Lazy<T> Auto<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);
        var a = accelerator;
        siluBackward = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(BackwardKernels.SiluBackward));
        geluTanhBackward = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(BackwardKernels.GeluTanhBackward));
        applyRopeBackward = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(BackwardKernels.ApplyRopeBackward));
        fill = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, float, StridedMatrix, Elements>(BackwardKernels.Fill));
        scaleInPlace = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, float, StridedMatrix, Elements>(BackwardKernels.ScaleInPlace));
        adamW = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, AdamWFactors, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(BackwardKernels.AdamW));
        sumRowsPartials = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, StridedMatrix, Elements, ArrayView<float>>(BackwardKernels.SumRowsPartials));
        modulateBackwardPartials = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(BackwardKernels.ModulateBackwardPartials));
        gatedResidualBackwardPartials = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(BackwardKernels.GatedResidualBackwardPartials));
        finishColumnSums = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ColumnChunks, int, float, StridedMatrix, Elements, ArrayView<float>>(BackwardKernels.FinishColumnSums));
        layerNormBackward = Auto(() => a.LoadStreamKernel<int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(BackwardKernels.LayerNormBackward));
        rmsNormBackward = Auto(() => a.LoadStreamKernel<int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(BackwardKernels.RmsNormBackward));
        softmaxBackwardRows = Auto(() => a.LoadStreamKernel<int, float, ArrayView<float>, ArrayView<float>>(BackwardKernels.SoftmaxBackwardRows));
        sumOfSquaresPartials = Auto(() => a.LoadStreamKernel<long, int, StridedMatrix, Elements, ArrayView<double>>(BackwardKernels.SumOfSquaresPartials));
        generalGemm = Auto(() => a.LoadStreamKernel<GemmShape, GemmOperand, Elements, GemmOperand, Elements, GemmOperand, Elements>(BackwardKernels.GeneralGemm));
    }

    public Binary SiluBackward => siluBackward.Value;
    public Binary GeluTanhBackward => geluTanhBackward.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements> ApplyRopeBackward => applyRopeBackward.Value;
    public Action<Index1D, int, float, StridedMatrix, Elements> Fill => fill.Value;
    public Action<Index1D, int, float, StridedMatrix, Elements> ScaleInPlace => scaleInPlace.Value;
    public Action<Index1D, AdamWFactors, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> AdamW => adamW.Value;
    public Action<Index1D, ColumnChunks, StridedMatrix, Elements, ArrayView<float>> SumRowsPartials => sumRowsPartials.Value;
    public ChunkedGradient ModulateBackwardPartials => modulateBackwardPartials.Value;
    public ChunkedGradient GatedResidualBackwardPartials => gatedResidualBackwardPartials.Value;
    public Action<Index1D, ColumnChunks, int, float, StridedMatrix, Elements, ArrayView<float>> FinishColumnSums => finishColumnSums.Value;
    public Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements> LayerNormBackward => layerNormBackward.Value;
    public Action<KernelConfig, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>> RmsNormBackward => rmsNormBackward.Value;
    public Action<KernelConfig, int, float, ArrayView<float>, ArrayView<float>> SoftmaxBackwardRows => softmaxBackwardRows.Value;
    public Action<KernelConfig, long, int, StridedMatrix, Elements, ArrayView<double>> SumOfSquaresPartials => sumOfSquaresPartials.Value;
    public Action<KernelConfig, GemmShape, GemmOperand, Elements, GemmOperand, Elements, GemmOperand, Elements> GeneralGemm => generalGemm.Value;
}
