using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The autoencoder's image ops (see <see cref="IBackend.Conv2d"/>). Conv2d is im2col into a pooled scratch matrix and
/// then <see cref="Linear"/>, so it runs on cuBLAS sgemm where Linear does and on the tiled ILGPU GEMM elsewhere.
/// </summary>
public sealed partial class IlgpuBackend
{
    private ImageKernelSet? imageKernelSet;

    private ImageKernelSet ImageOps =>
        LazyInitializer.EnsureInitialized(ref imageKernelSet, () => new ImageKernelSet(accelerator));

    /// <summary>
    /// Most floats one im2col chunk may take (default 2²⁶ = 256 MB): larger outputs are done in chunks of output
    /// pixels, so the VAE decoder's last level (1024², 128 channels, K = 1152: 4.8 GB as one matrix) stays small.
    /// Settable so tests cover the chunked path at small sizes.
    /// </summary>
    internal long ConvScratchFloats { get; set; } = 1L << 26;

    /// <summary>Most elements one GroupNorm statistics group reduces (more chunks for large images). Settable for tests.</summary>
    internal int GroupNormElementsPerBlock { get; set; } = 1 << 16;

    /// <summary>
    /// The weight is first reordered, on the device, into a tap-major [Cout, kh·kw·Cin] scratch matrix (column
    /// (ky·kw + kx)·Cin + ci, the order of an im2col row of channels-last pixels): float32 (widening bf16/f16 on the
    /// way), or bf16 for a bf16 weight on bf16 activations; that costs one pass over the weight, negligible beside the
    /// GEMM's 2·outH·outW reuses of it, and keeps the uploaded weight in its checkpoint layout and storage. So the conv
    /// GEMM is float32 (sgemm on cuBLAS) except for a bf16 weight on bf16 activations: bf16 × bf16 (GemmEx, float32
    /// accumulation). A 1×1, stride-1, unpadded conv multiplies x directly, without im2col.
    /// </summary>
    public void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding)
    {
        var w = OwnTensor(weight, nameof(weight));
        GpuTensor? b = bias is null ? null : OwnTensor(bias, nameof(bias));
        var shape = ConvShape.Validate(y, x, height, width, w.Shape, b?.Length, stride, padding);
        var (count, _, _) = Output(y);
        var (xs, xd) = Strided(x, nameof(x));
        if (count == 0)
            return;
        ConvShape.RequireDisjoint(y, x, nameof(x));

        int k = shape.PatchLength, cout = shape.OutChannels;
        // A bf16 weight on bf16 activations (a bf16 forward) packs the weight and the patches as bf16, so the product
        // is a bf16 GemmEx that reads and writes bf16 with no conversion pass; as in Linear, float32 weights and float32
        // views keep the float32 GEMM.
        bool narrow = x.Tensor.DType == DType.BF16 && w.DType == DType.BF16;
        using var packed = narrow
            ? new GpuTensor(this, [cout, k], DType.BF16, wordPool.Rent((long)cout * k), pooled: true)
            : new GpuTensor(this, [cout, k], floatPool.Rent((long)cout * k), pooled: true);
        var packedElements = ElementsOf(packed);
        int weightCount = (int)CheckedCount((long)cout * k);
        switch (w.DType)
        {
            case DType.F32:
                ImageOps.RepackFloat32(weightCount, shape.InChannels, shape.KernelHeight, shape.KernelWidth, packedElements, w.Floats);
                break;
            case DType.BF16:
                ImageOps.RepackBFloat16(weightCount, shape.InChannels, shape.KernelHeight, shape.KernelWidth, packedElements, w.Words);
                break;
            case DType.F16:
                ImageOps.RepackFloat16(weightCount, shape.InChannels, shape.KernelHeight, shape.KernelWidth, packedElements, w.Words);
                break;
            default:
                throw new NotSupportedException($"conv weights stored as {w.DType}");
        }

        if (shape.IsPointwise)
        {
            Linear(y, x, packed, b);
            return;
        }

        // Chunks of whole images when one fits the scratch budget, else of output pixels within one image.
        int outPixels = shape.OutPixels;
        var (imagesPerChunk, pixelsPerChunk, scratchFloats) = GpuMemoryPolicy.ConvChunks(ConvScratchFloats, k, outPixels, shape.Batch);
        using var columns = narrow
            ? new GpuTensor(this, [checked((int)scratchFloats)], DType.BF16, wordPool.Rent(scratchFloats), pooled: true)
            : new GpuTensor(this, [checked((int)scratchFloats)], floatPool.Rent(scratchFloats), pooled: true);
        var geometry = new ConvGeometry(shape.Height, shape.Width, shape.InChannels, shape.KernelHeight, shape.KernelWidth,
            shape.Stride, shape.Padding.Top, shape.Padding.Left, shape.OutWidth, outPixels);

        for (int b0 = 0; b0 < shape.Batch; b0 += imagesPerChunk)
        {
            int images = Math.Min(imagesPerChunk, shape.Batch - b0);
            for (int p0 = 0; p0 < outPixels; p0 += pixelsPerChunk)
            {
                int pixels = Math.Min(pixelsPerChunk, outPixels - p0);
                long elements = (long)images * pixels * k;
                // Safe to overwrite the scratch of the previous chunk: its GEMM ran earlier on the same stream.
                ImageOps.Im2Col((int)CheckedCount(elements), geometry, pixels, b0, p0, ElementsOf(columns), xs, xd);
                var patches = new View(columns, 0, images, pixels, k, (long)pixels * k, k);
                var outputs = new View(y.Tensor, y.Offset + b0 * y.BatchStride + p0 * y.RowStride, images, pixels, cout,
                    y.BatchStride, y.RowStride);
                Linear(outputs, patches, packed, b);
            }
        }
    }

    /// <summary>
    /// Three launches: per-(batch, group, chunk of rows) sums of x and x² in float64 (a shared-memory reduction), one
    /// thread per (batch, group) adding the chunks into mean and 1/sqrt(var + eps) (float64, one pass: exact enough
    /// for float32 data unless |mean|/std exceeds ~10⁴), then the element-wise normalisation and affine.
    /// </summary>
    public void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps)
    {
        var (count, ys, yd) = Output(y);
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        int channels = y.Cols;
        if (groups <= 0 || channels % groups != 0)
            throw new ArgumentException($"{channels} channels do not split into {groups} groups", nameof(groups));
        GpuTensor? s = scale is null ? null : OwnTensor(scale, nameof(scale)).AsFloat32();
        GpuTensor? b = bias is null ? null : OwnTensor(bias, nameof(bias)).AsFloat32();
        if (s is not null && s.Length != channels)
            throw new ArgumentException($"scale {s} does not have {channels} elements", nameof(scale));
        if (b is not null && b.Length != channels)
            throw new ArgumentException($"bias {b} does not have {channels} elements", nameof(bias));
        ConvShape.RequireUnitColumnRows(x, nameof(x));
        ConvShape.RequireUnitColumnRows(y, nameof(y));
        if (count == 0)
            return;

        var shape = new GroupNormShape(y.Rows, channels, groups, s is not null, b is not null);
        int pairs = checked(y.Batch * groups);
        int rows = y.Rows;
        // Enough groups to fill the device, none reducing more than GroupNormElementsPerBlock elements.
        var (rowsPerChunk, chunks) = GpuMemoryPolicy.GroupNormChunks(accelerator.NumMultiprocessors, pairs, rows, shape.GroupSize, GroupNormElementsPerBlock);

        var partials = floatPool.Rent(4L * pairs * chunks);
        var stats = floatPool.Rent(4L * pairs);
        try
        {
            var partialView = partials.View.SubView(0, 4L * pairs * chunks).AsContiguous().Cast<double>();
            var statsView = stats.View.SubView(0, 4L * pairs).AsContiguous().Cast<double>();
            int group = GroupSizeFor(rowsPerChunk * shape.GroupSize, Math.Min(launch.RowGroup, GroupNormKernels.MaxGroupSize));
            ImageOps.GroupNormPartials(new KernelConfig(new Index2D(chunks, pairs), new Index2D(group, 1)),
                shape, rowsPerChunk, xs, xd, partialView);
            ImageOps.GroupNormFinish(pairs, chunks, (double)rows * shape.GroupSize, eps, partialView, statsView);
            ImageOps.GroupNormApply(count, shape, ys, yd, xs, xd, statsView, s?.Floats ?? default, b?.Floats ?? default);
        }
        finally
        {
            // Safe to reuse at once: later kernels on the same stream run after these.
            floatPool.Return(partials);
            floatPool.Return(stats);
        }
    }

    public void UpsampleNearest2x(View y, View x, int height, int width)
    {
        ConvShape.ValidateUpsample2x(y, x, height, width);
        var (count, ys, yd) = Output(y);
        var (xs, xd) = Strided(x, nameof(x));
        if (count == 0)
            return;
        ConvShape.RequireDisjoint(y, x, nameof(x));
        ImageOps.UpsampleNearest2x(count, y.Cols, width, x.Rows, ys, yd, xs, xd);
    }
}
