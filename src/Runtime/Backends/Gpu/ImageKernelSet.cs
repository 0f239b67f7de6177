using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The image kernels of one accelerator as typed launch delegates, each compiled on first use, like
/// <see cref="GpuKernels"/> (kept apart so the transformer's kernel table does not grow with the autoencoder's).
/// </summary>
internal sealed class ImageKernelSet
{
    private readonly Lazy<Action<Index1D, ConvGeometry, int, int, int, Elements, StridedMatrix, Elements>> im2Col;
    private readonly Lazy<Action<Index1D, int, int, int, Elements, ArrayView<float>>> repackFloat32;
    private readonly Lazy<Action<Index1D, int, int, int, Elements, ArrayView<ushort>>> repackBFloat16, repackFloat16;
    private readonly Lazy<Action<Index1D, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements>> upsample;
    private readonly Lazy<Action<KernelConfig, GroupNormShape, int, StridedMatrix, Elements, ArrayView<double>>> groupNormPartials;
    private readonly Lazy<Action<Index1D, int, double, float, ArrayView<double>, ArrayView<double>>> groupNormFinish;
    private readonly Lazy<Action<Index1D, GroupNormShape, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<float>, ArrayView<float>>> groupNormApply;

    public ImageKernelSet(Accelerator accelerator)
    {
        Lazy<T> Auto<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);
        var a = accelerator;
        im2Col = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ConvGeometry, int, int, int, Elements, StridedMatrix, Elements>(ImageKernels.Im2Col));
        repackFloat32 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, Elements, ArrayView<float>>(ImageKernels.RepackConvWeightFloat32));
        repackBFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, Elements, ArrayView<ushort>>(ImageKernels.RepackConvWeightBFloat16));
        repackFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, Elements, ArrayView<ushort>>(ImageKernels.RepackConvWeightFloat16));
        upsample = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements>(ImageKernels.UpsampleNearest2x));
        groupNormPartials = Auto(() => a.LoadStreamKernel<GroupNormShape, int, StridedMatrix, Elements, ArrayView<double>>(GroupNormKernels.Partials));
        groupNormFinish = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, double, float, ArrayView<double>, ArrayView<double>>(ImageKernels.GroupNormFinish));
        groupNormApply = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, GroupNormShape, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<float>, ArrayView<float>>(ImageKernels.GroupNormApply));
    }

    public Action<Index1D, ConvGeometry, int, int, int, Elements, StridedMatrix, Elements> Im2Col => im2Col.Value;
    public Action<Index1D, int, int, int, Elements, ArrayView<float>> RepackFloat32 => repackFloat32.Value;
    public Action<Index1D, int, int, int, Elements, ArrayView<ushort>> RepackBFloat16 => repackBFloat16.Value;
    public Action<Index1D, int, int, int, Elements, ArrayView<ushort>> RepackFloat16 => repackFloat16.Value;
    public Action<Index1D, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements> UpsampleNearest2x => upsample.Value;
    public Action<KernelConfig, GroupNormShape, int, StridedMatrix, Elements, ArrayView<double>> GroupNormPartials => groupNormPartials.Value;
    public Action<Index1D, int, double, float, ArrayView<double>, ArrayView<double>> GroupNormFinish => groupNormFinish.Value;
    public Action<Index1D, GroupNormShape, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<float>, ArrayView<float>> GroupNormApply => groupNormApply.Value;
}
