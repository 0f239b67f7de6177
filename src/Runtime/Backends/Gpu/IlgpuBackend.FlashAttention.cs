using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Attention on <see cref="FlashAttentionKernels"/> (FlashAttention-2 with bf16 tensor-core products): the choice
/// between it and the cuBLAS / tiled paths, and the launches of its forward and backward.
/// </summary>
public sealed partial class IlgpuBackend
{
    private AttentionKernelChoice attentionKernel = AttentionKernelChoice.Auto;
    private Action<KernelConfig, int, int, int, float, AttentionTensor, AttentionTensor, AttentionTensor, AttentionTensor, ScoreMask, ArrayView<float>, int>? flashForward;
    private Action<KernelConfig, int, int, int, float, AttentionTensor, AttentionTensor, AttentionTensor, AttentionTensor, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionTensor, AttentionTensor>? flashBackward;
    private Action<Index1D, int, int, int, AttentionTensor, ArrayView<float>, ArrayView<float>>? flashRowDots;
    private Action<Index1D, int, ArrayView<float>, AttentionTensor>? flashStoreQueryGradient;

    /// <summary>
    /// Which kernel attention and its backward run on (<c>--attention</c>). Setting <see cref="AttentionKernelChoice.Flash"/>
    /// on a device without bf16 tensor cores (or warps of 32) throws at once.
    /// </summary>
    public AttentionKernelChoice AttentionKernel
    {
        get => attentionKernel;
        set
        {
            if (value == AttentionKernelChoice.Flash && FlashDeviceLimitation() is string reason)
                throw new ArgumentException($"--attention flash: {reason}; use --attention auto or cublas");
            attentionKernel = value;
        }
    }

    /// <summary>Warps a flash group has: 4 on a GPU; 1 on the CPU simulator (each simulated thread is an OS thread).</summary>
    private int FlashWarps => accelerator.AcceleratorType == AcceleratorType.Cuda ? FlashAttentionKernels.MaxWarps : 1;

    /// <summary>Why this device cannot run the flash kernels, or null.</summary>
    private string? FlashDeviceLimitation()
    {
        if (accelerator.WarpSize != TensorCoreMma.WarpLanes)
            return $"it needs warps of {TensorCoreMma.WarpLanes} threads and {accelerator.Name} has {accelerator.WarpSize}";
        if (accelerator is CudaAccelerator cuda && cuda.Architecture.Major < 8)
            return $"bf16 tensor-core products (mma.sync m16n8k16 bf16) need compute capability 8.0 or newer, {cuda.Name} has {cuda.Architecture.Major}.{cuda.Architecture.Minor}";
        return null;
    }

    internal static string? FlashHeadLimitation(int headDim) =>
        headDim > 0 && headDim % 16 == 0 && headDim <= FlashAttentionKernels.MaxHeadDim
            ? null
            : $"the flash kernel takes head dims that are multiples of 16 up to {FlashAttentionKernels.MaxHeadDim}, this one is {headDim}";

    /// <summary>Whether attention with this head dim runs on the flash kernels under <see cref="AttentionKernel"/>.</summary>
    private bool UsesFlashAttention(int headDim)
    {
        switch (attentionKernel)
        {
            case AttentionKernelChoice.Flash:
                if (FlashHeadLimitation(headDim) is string reason)
                    throw new ArgumentException($"--attention flash: {reason}; use --attention auto");
                return true;
            case AttentionKernelChoice.Auto:
                return accelerator.AcceleratorType == AcceleratorType.Cuda && Precision == GpuPrecision.BFloat16 &&
                    FlashDeviceLimitation() is null && FlashHeadLimitation(headDim) is null;
            default:
                return false;
        }
    }

    /// <summary>Validated views of attention as the flash kernels take them; logSumExp empty unless the backward needs it.</summary>
    private void FlashAttentionForward(AttentionTensor o, View q, View k, View v, int heads, int headDim, float scale,
        ScoreMask mask, ArrayView<float> logSumExp)
    {
        var (qs, qd) = Strided(q, nameof(q));
        var (ks, kd) = Strided(k, nameof(k));
        var (vs, vd) = Strided(v, nameof(v));
        LazyInitializer.EnsureInitialized(ref flashForward, () => accelerator.LoadStreamKernel<int, int, int, float, AttentionTensor, AttentionTensor, AttentionTensor, AttentionTensor, ScoreMask, ArrayView<float>, int>(FlashAttentionKernels.Forward));
        int warps = FlashWarps, rowsPerGroup = warps * FlashAttentionKernels.RowsPerWarp;
        var grid = new Index3D((q.Rows + rowsPerGroup - 1) / rowsPerGroup, heads, q.Batch);
        flashForward(new KernelConfig(grid, new Index3D(warps * TensorCoreMma.WarpLanes, 1, 1)),
            q.Rows, k.Rows, headDim, scale, o, new AttentionTensor(qs, qd), new AttentionTensor(ks, kd), new AttentionTensor(vs, vd),
            mask, logSumExp, logSumExp.Length > 0 ? 1 : 0);
    }

    /// <summary>
    /// The flash backward: the forward is recomputed (the op receives q, k, v and dO only) into a float32 output and
    /// per-row log-sum-exp, then D = rowsum(dO∘O), then one pass over key blocks writes dK and dV and adds dQ into a
    /// float32 accumulator that is finally stored into dq. Scratch: two [batch·Lq, heads·headDim] floats and two
    /// [batch·heads·Lq] floats (at FLUX's size 2×57 MB), against the cuBLAS path's score matrices.
    /// </summary>
    private void FlashAttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads,
        int headDim, float scale)
    {
        int batches = q.Batch, queryRows = q.Rows, keyRows = k.Rows, width = heads * headDim;
        var (outputCount, statisticCount) = GpuMemoryPolicy.FlashBackwardWorkspace(batches, queryRows, width, heads);
        var output = floatPool.Rent(outputCount);
        var queryGradient = floatPool.Rent(outputCount);
        var logSumExp = floatPool.Rent(statisticCount);
        var rowDots = floatPool.Rent(statisticCount);
        try
        {
            var outputView = output.View.SubView(0, outputCount).AsContiguous();
            var queryGradientView = queryGradient.View.SubView(0, outputCount).AsContiguous();
            var logSumExpView = logSumExp.View.SubView(0, statisticCount).AsContiguous();
            var rowDotView = rowDots.View.SubView(0, statisticCount).AsContiguous();
            var dense = new StridedMatrix(0, queryRows, (long)queryRows * width, width);
            FlashAttentionForward(new AttentionTensor(dense, outputView), q, k, v, heads, headDim, scale, ScoreMask.None, logSumExpView);

            var (dOutLayout, dOutData) = Strided(dOut, nameof(dOut));
            var dOutTensor = new AttentionTensor(dOutLayout, dOutData);
            LazyInitializer.EnsureInitialized(ref flashRowDots, () => accelerator.LoadAutoGroupedStreamKernel<Index1D, int, int, int, AttentionTensor, ArrayView<float>, ArrayView<float>>(FlashAttentionRowKernels.RowDots));
            flashRowDots((int)CheckedCount(statisticCount), queryRows, heads, headDim, dOutTensor, outputView, rowDotView);
            queryGradientView.MemSetToZero();

            var (qs, qd) = Strided(q, nameof(q));
            var (ks, kd) = Strided(k, nameof(k));
            var (vs, vd) = Strided(v, nameof(v));
            var (dks, dkd) = Strided(dk, nameof(dk));
            var (dvs, dvd) = Strided(dv, nameof(dv));
            LazyInitializer.EnsureInitialized(ref flashBackward, () => accelerator.LoadStreamKernel<int, int, int, float, AttentionTensor, AttentionTensor, AttentionTensor, AttentionTensor, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionTensor, AttentionTensor>(FlashAttentionKernels.Backward));
            int warps = FlashWarps, keysPerGroup = warps * FlashAttentionKernels.RowsPerWarp;
            var grid = new Index3D((keyRows + keysPerGroup - 1) / keysPerGroup, heads, batches);
            flashBackward(new KernelConfig(grid, new Index3D(warps * TensorCoreMma.WarpLanes, 1, 1)),
                queryRows, keyRows, headDim, scale, new AttentionTensor(qs, qd), new AttentionTensor(ks, kd),
                new AttentionTensor(vs, vd), dOutTensor, logSumExpView, rowDotView, queryGradientView,
                new AttentionTensor(dks, dkd), new AttentionTensor(dvs, dvd));

            var (dqs, dqd) = Strided(dq, nameof(dq));
            LazyInitializer.EnsureInitialized(ref flashStoreQueryGradient, () => accelerator.LoadAutoGroupedStreamKernel<Index1D, int, ArrayView<float>, AttentionTensor>(FlashAttentionRowKernels.StoreQueryGradient));
            flashStoreQueryGradient((int)CheckedCount(outputCount), width, queryGradientView, new AttentionTensor(dqs, dqd));
        }
        finally
        {
            // Safe to reuse at once: later work on the same stream runs after these kernels.
            floatPool.Return(output);
            floatPool.Return(queryGradient);
            floatPool.Return(logSumExp);
            floatPool.Return(rowDots);
        }
    }
}
