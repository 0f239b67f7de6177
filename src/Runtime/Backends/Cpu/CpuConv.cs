using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// Conv2d on channels-last images as im2col + the packed GEMM. The weight [Cout, Cin, kh, kw] is reordered once to
/// the tap-major matrix [Cout, K = kh·kw·Cin] (column (ky·kw + kx)·Cin + ci), which is the order a channels-last
/// im2col row has: for a fixed tap the Cin inputs are one contiguous pixel of x, and for stride 1 the kw taps of a
/// kernel row are kw consecutive pixels, one copy. That matrix is then packed into the GEMM's NR-wide panels
/// (<see cref="CpuGemm.PackWholeB"/>) so every thread multiplies against the same read-only panels.
/// The output pixels are cut into blocks of a few hundred rows; a thread builds a block's im2col rows (about 1 MB,
/// so they are still in L2 when the GEMM packs them) and multiplies. Memory is one block per thread, never the
/// whole [outH·outW, K] matrix (300 MB for 128 channels at 256²).
/// A 1×1, stride-1, unpadded conv is a Linear and skips all of this.
/// </summary>
internal static unsafe class CpuConv
{
    /// <summary>Target floats of one im2col block (1 MB): large enough to amortise the per-block GEMM setup.</summary>
    private const int BlockFloats = 1 << 18;

    /// <summary>
    /// Packed panels per uploaded weight tensor, made on first use and dropped with the tensor. Only weights from
    /// <see cref="CpuBackend.UploadWeight"/> are cached: they are read-only by contract, whereas a weight written
    /// into an allocated activation tensor could change between calls.
    /// </summary>
    private static readonly ConditionalWeakTable<CpuTensor, PackedWeight> Cache = new();

    internal sealed class PackedWeight
    {
        private readonly float[] _data;

        public PackedWeight(float[] pinned, GemmKernel kernel)
        {
            _data = pinned;
            Kernel = kernel;
            Pointer = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        }

        public GemmKernel Kernel { get; }

        /// <summary>Valid while this object lives (the array is pinned).</summary>
        public float* Pointer { get; }

        public long Length => _data.LongLength;
    }

    /// <summary>Number of packed weights cached (tests).</summary>
    internal static int CachedWeightCount => Cache.Count();

    public static void Run(in ConvShape shape, View y, View x, CpuTensor weight, float* bias, GemmKernel kernel)
    {
        if (shape.IsPointwise)
        {
            RunPointwise(shape, y, x, weight, bias, kernel);
            return;
        }

        ConvShape s0 = shape;
        PackedWeight packed = weight.IsPooled
            ? Pack(weight, shape, kernel)
            : Cache.GetValue(weight, w => Pack(w, s0, kernel));
        if (packed.Kernel != kernel) packed = Pack(weight, shape, kernel);

        ConvShape s = shape;
        int k = s.PatchLength, n = s.OutChannels, outPixels = s.OutPixels;
        int mr = GemmGeometry.For(kernel).MR;
        int blockRows = Math.Clamp(BlockFloats / k / mr * mr, 4 * mr, 40 * mr);
        blockRows = Math.Min(blockRows, (outPixels + mr - 1) / mr * mr);
        int blocksPerImage = (outPixels + blockRows - 1) / blockRows;
        int blocks = checked(s.Batch * blocksPerImage);

        float* xBase = CpuBackend.Base(x), yBase = CpuBackend.Base(y), panels = packed.Pointer;
        long xRowStride = x.RowStride, xBatchStride = x.BatchStride, yRowStride = y.RowStride, yBatchStride = y.BatchStride;
        CpuParallel.ForRanges(blocks, (long)blockRows * k * n, (start, end) =>
        {
            float* columns = Scratch.ForCurrentThread((long)blockRows * k);
            for (int block = start; block < end; block++)
            {
                int b = block / blocksPerImage;
                int p0 = (block - b * blocksPerImage) * blockRows;
                int rows = Math.Min(blockRows, outPixels - p0);
                Im2Col(s, xBase + b * xBatchStride, xRowStride, p0, rows, columns);
                float* c = yBase + b * yBatchStride + p0 * yRowStride;
                CpuGemm.MultiplyPrepacked(columns, k, rows, panels, n, k, c, yRowStride, kernel);
                if (bias != null)
                    for (int r = 0; r < rows; r++) CpuRowKernels.Add(c + r * yRowStride, c + r * yRowStride, bias, n);
            }
        });
        // The loop reads the panels through a raw pointer: without this the panels packed for a writable (training)
        // weight, which nothing else holds, could be collected mid-loop and the GEMM would read freed memory.
        GC.KeepAlive(packed);
    }

    /// <summary>y = x·Wᵀ + bias with W = weight seen as [Cout, Cin] (its memory order already is).</summary>
    private static void RunPointwise(in ConvShape s, View y, View x, CpuTensor weight, float* bias, GemmKernel kernel)
    {
        float* xBase = CpuBackend.Base(x), yBase = CpuBackend.Base(y);
        int cin = s.InChannels, cout = s.OutChannels;
        if (x.BatchesStackAsRows && y.BatchesStackAsRows)
        {
            var problem = new GemmProblem(x.Batch * x.Rows, cout, cin, xBase, x.RowStride, weight.Pointer, cin,
                bIsKByN: false, yBase, y.RowStride, bias);
            CpuGemm.Multiply(problem, kernel, parallel: true);
            return;
        }
        for (int b = 0; b < x.Batch; b++)
        {
            var problem = new GemmProblem(x.Rows, cout, cin, xBase + b * x.BatchStride, x.RowStride, weight.Pointer, cin,
                bIsKByN: false, yBase + b * y.BatchStride, y.RowStride, bias);
            CpuGemm.Multiply(problem, kernel, parallel: true);
        }
    }

    /// <summary>The weight as tap-major [Cout, kh·kw·Cin], packed into GEMM panels.</summary>
    internal static PackedWeight Pack(CpuTensor weight, in ConvShape s, GemmKernel kernel)
    {
        int cout = s.OutChannels, cin = s.InChannels, kh = s.KernelHeight, kw = s.KernelWidth, k = s.PatchLength;
        float[] tapMajor = GC.AllocateUninitializedArray<float>(checked(cout * k));
        float* w = weight.Pointer;
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++)
                        tapMajor[(long)co * k + (ky * kw + kx) * cin + ci] = w[(((long)co * cin + ci) * kh + ky) * kw + kx];
        float[] panels = GC.AllocateUninitializedArray<float>(checked((int)CpuGemm.PackedWholeBFloats(cout, k, kernel)), pinned: true);
        fixed (float* source = tapMajor, destination = panels)
            CpuGemm.PackWholeB(source, k, bIsKByN: false, cout, k, kernel, destination);
        return new PackedWeight(panels, kernel);
    }

    /// <summary>
    /// Rows [p0, p0 + rows) of one image's im2col matrix: row p (output pixel oy·outW + ox) holds, tap after tap, the
    /// Cin channels of input pixel (oy·stride + ky − top, ox·stride + kx − left), zeros outside the image.
    /// </summary>
    internal static void Im2Col(in ConvShape s, float* image, long rowStride, int p0, int rows, float* columns)
    {
        int cin = s.InChannels, kh = s.KernelHeight, kw = s.KernelWidth, k = s.PatchLength;
        int height = s.Height, width = s.Width, stride = s.Stride, top = s.Padding.Top, left = s.Padding.Left;
        int outWidth = s.OutWidth;
        long channelBytes = (long)cin * sizeof(float);
        // Consecutive pixels are consecutive memory: a kernel row inside the image is one copy of kw·Cin floats.
        bool denseRows = rowStride == cin && stride >= 1;
        for (int r = 0; r < rows; r++)
        {
            int p = p0 + r;
            int oy = p / outWidth, ox = p - oy * outWidth;
            int iy0 = oy * stride - top, ix0 = ox * stride - left;
            float* row = columns + (long)r * k;
            bool columnsInside = ix0 >= 0 && ix0 + kw <= width;
            for (int ky = 0; ky < kh; ky++)
            {
                int iy = iy0 + ky;
                float* tapRow = row + ky * kw * cin;
                if (iy < 0 || iy >= height)
                {
                    new Span<float>(tapRow, kw * cin).Clear();
                    continue;
                }
                float* source = image + ((long)iy * width + ix0) * rowStride;
                if (columnsInside && denseRows)
                {
                    Buffer.MemoryCopy(source, tapRow, kw * channelBytes, kw * channelBytes);
                    continue;
                }
                for (int kx = 0; kx < kw; kx++)
                {
                    int ix = ix0 + kx;
                    float* tap = tapRow + kx * cin;
                    if (ix < 0 || ix >= width) new Span<float>(tap, cin).Clear();
                    else Buffer.MemoryCopy(source + kx * rowStride, tap, channelBytes, channelBytes);
                }
            }
        }
    }

    /// <summary>One thread's im2col block, grown on demand and kept for the thread's life (pool threads are few).</summary>
    private static class Scratch
    {
        [ThreadStatic] private static float* t_buffer;
        [ThreadStatic] private static long t_capacity;

        public static float* ForCurrentThread(long floats)
        {
            if (t_buffer != null && t_capacity >= floats) return t_buffer;
            if (t_buffer != null) NativeMemory.AlignedFree(t_buffer);
            t_capacity = Math.Max(floats, 1024);
            t_buffer = (float*)NativeMemory.AlignedAlloc((nuint)(t_capacity * sizeof(float)), 64);
            return t_buffer;
        }
    }
}
