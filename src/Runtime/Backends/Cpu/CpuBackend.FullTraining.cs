namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// The full-parameter training ops on the CPU: norm scale gradients and the autoencoder's backward rules. Reductions
/// over rows keep per-range partial sums in float64 and merge them under a lock, so no two threads add to one sum.
/// Convolutions go through im2col blocks and the packed GEMM, as the forward does.
/// </summary>
public sealed unsafe partial class CpuBackend : IFullTrainingBackend
{
    public void RmsNormScaleBackward(DeviceTensor dScale, View dy, View x, int groupSize, float eps)
    {
        RequireSameShape(dy, x, nameof(x));
        CpuTensor d = AsCpu(dScale, nameof(dScale));
        if (groupSize <= 0 || x.Cols % groupSize != 0)
            throw new ArgumentException($"{x.Cols} columns do not split into groups of {groupSize}", nameof(groupSize));
        if (d.Length != groupSize) throw new ArgumentException($"dScale {d} does not have {groupSize} elements", nameof(dScale));
        RowWalker dys = new(dy), xs = new(x);
        int n = x.Cols;
        double[] total = CpuParallel.SumRanges(xs.Count, 3L * n, groupSize, (start, end, partial) =>
        {
            for (int i = start; i < end; i++)
            {
                float* xRow = xs[i], dyRow = dys[i];
                for (int g = 0; g < n; g += groupSize)
                {
                    float* xg = xRow + g, dyg = dyRow + g;
                    double r = 1.0 / Math.Sqrt(CpuVector.SumSquaredDeviations(xg, 0f, groupSize) / groupSize + eps);
                    for (int j = 0; j < groupSize; j++) partial[j] += (double)dyg[j] * xg[j] * r;
                }
            }
        });
        float* target = d.Pointer;
        for (int j = 0; j < groupSize; j++) target[j] = (float)(target[j] + total[j]);
    }

    public void Conv2dBackwardInput(View dx, View dy, int height, int width, DeviceTensor weight, int stride, Padding2d padding)
    {
        CpuTensor w = AsCpu(weight, nameof(weight));
        ConvShape s = ConvShape.Validate(dy, dx, height, width, w.Shape, null, stride, padding);
        RequireInside(dx, nameof(dx));
        RequireInside(dy, nameof(dy));
        ConvShape.RequireDisjoint(dx, dy, nameof(dy));
        Zero(dx);
        if (dy.ElementCount == 0) return;
        int k = s.PatchLength, cout = s.OutChannels;
        float[] tapMajor = CpuConvBackward.TapMajor(w.Pointer, s);
        int blockRows = CpuConvBackward.BlockRows(s);
        float[] columns = GC.AllocateUninitializedArray<float>(blockRows * k, pinned: true);
        fixed (float* wt = tapMajor, cols = columns)
        {
            for (int b = 0; b < s.Batch; b++)
            {
                float* dyImage = Base(dy) + b * dy.BatchStride, dxImage = Base(dx) + b * dx.BatchStride;
                for (int p0 = 0; p0 < s.OutPixels; p0 += blockRows)
                {
                    int rows = Math.Min(blockRows, s.OutPixels - p0);
                    // dColumns = dy·W_tapmajor: the gradient of each im2col row, then scattered back onto its pixels.
                    CpuGemm.MultiplyGeneral(new GeneralGemmProblem(rows, k, cout, dyImage + (long)p0 * dy.RowStride, dy.RowStride, false,
                        wt, k, false, cols, k, 1f, 0f), CpuGemm.BestKernel, parallel: true);
                    CpuConvBackward.ScatterColumns(s, cols, p0, rows, dxImage, dx.RowStride);
                }
            }
        }
    }

    public void Conv2dBackwardWeight(DeviceTensor dWeight, View dy, View x, int height, int width, int stride, Padding2d padding)
    {
        CpuTensor dw = AsCpu(dWeight, nameof(dWeight));
        ConvShape s = ConvShape.Validate(dy, x, height, width, dw.Shape, null, stride, padding);
        RequireInside(x, nameof(x));
        RequireInside(dy, nameof(dy));
        if (dy.ElementCount == 0) return;
        int k = s.PatchLength, cout = s.OutChannels;
        int blockRows = CpuConvBackward.BlockRows(s);
        float[] columns = GC.AllocateUninitializedArray<float>(blockRows * k, pinned: true);
        float[] gradient = new float[cout * k];
        fixed (float* cols = columns, g = gradient)
        {
            for (int b = 0; b < s.Batch; b++)
            {
                float* dyImage = Base(dy) + b * dy.BatchStride, xImage = Base(x) + b * x.BatchStride;
                for (int p0 = 0; p0 < s.OutPixels; p0 += blockRows)
                {
                    int rows = Math.Min(blockRows, s.OutPixels - p0);
                    CpuConvBackward.GatherColumns(s, xImage, x.RowStride, p0, rows, cols);
                    // dW_tapmajor += dyᵀ·columns.
                    CpuGemm.MultiplyGeneral(new GeneralGemmProblem(cout, k, rows, dyImage + (long)p0 * dy.RowStride, dy.RowStride, true,
                        cols, k, false, g, k, 1f, 1f), CpuGemm.BestKernel, parallel: true);
                }
            }
            CpuConvBackward.AddTapMajor(dw.Pointer, g, s);
        }
    }

    public void GroupNormBackward(View? dx, DeviceTensor? dScale, DeviceTensor? dBias, View dy, View x, int groups, DeviceTensor? scale, float eps)
    {
        RequireSameShape(dy, x, nameof(x));
        if (dx is View target) RequireSameShape(target, x, nameof(dx));
        int channels = x.Cols;
        if (groups <= 0 || channels % groups != 0)
            throw new ArgumentException($"{channels} channels do not split into {groups} groups", nameof(groups));
        CpuTensor? s = scale is null ? null : AsCpu(scale, nameof(scale));
        CpuTensor? ds = dScale is null ? null : AsCpu(dScale, nameof(dScale));
        CpuTensor? db = dBias is null ? null : AsCpu(dBias, nameof(dBias));
        foreach (var (tensor, name) in new[] { (s, nameof(scale)), (ds, nameof(dScale)), (db, nameof(dBias)) })
            if (tensor is not null && tensor.Length != channels) throw new ArgumentException($"{name} {tensor} does not have {channels} elements", name);
        if (x.ElementCount == 0) return;
        CpuGroupNorm.Backward(dx, ds is null ? null : ds.Pointer, db is null ? null : db.Pointer, dy, x, groups, s is null ? null : s.Pointer, eps);
    }

    public void UpsampleNearest2xBackward(View dx, View dy, int height, int width)
    {
        if (height <= 0 || width <= 0) throw new ArgumentOutOfRangeException(nameof(height), $"image of {height}×{width} pixels");
        if ((long)height * width != dx.Rows) throw new ArgumentException($"dx {dx} must have height·width = {height}·{width} rows", nameof(dx));
        if (dy.Batch != dx.Batch || dy.Cols != dx.Cols || dy.Rows != 4L * dx.Rows)
            throw new ArgumentException($"dy {dy} must be [{dx.Batch}, {2 * height}·{2 * width}, {dx.Cols}] for dx {dx}", nameof(dy));
        RequireInside(dx, nameof(dx));
        RequireInside(dy, nameof(dy));
        ConvShape.RequireDisjoint(dx, dy, nameof(dy));
        int channels = dx.Cols, outWidth = 2 * width;
        RowWalker dxs = new(dx);
        float* dyBase = Base(dy);
        long dyRow = dy.RowStride, dyBatch = dy.BatchStride;
        CpuParallel.ForRanges(dxs.Count, 4L * channels, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                int b = Math.DivRem(i, height * width, out int pixel);
                int iy = Math.DivRem(pixel, width, out int ix);
                float* top = dyBase + b * dyBatch + ((long)(2 * iy) * outWidth + 2 * ix) * dyRow;
                float* bottom = top + outWidth * dyRow;
                float* output = dxs[i];
                for (int c = 0; c < channels; c++) output[c] = top[c] + top[dyRow + c] + bottom[c] + bottom[dyRow + c];
            }
        });
    }
}

/// <summary>The im2col pieces of the convolution's backward pass (same tap-major order as <see cref="CpuConv"/>).</summary>
internal static unsafe class CpuConvBackward
{
    /// <summary>Output pixels per im2col block: about 1 MB of columns.</summary>
    public static int BlockRows(in ConvShape s) => Math.Clamp((1 << 18) / s.PatchLength, 1, s.OutPixels);

    /// <summary>[Cout, Cin, kh, kw] → [Cout, (ky·kw + kx)·Cin + ci].</summary>
    public static float[] TapMajor(float* weight, in ConvShape s)
    {
        int cin = s.InChannels, kh = s.KernelHeight, kw = s.KernelWidth, k = s.PatchLength;
        var result = new float[s.OutChannels * k];
        for (int co = 0; co < s.OutChannels; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++)
                        result[co * k + (ky * kw + kx) * cin + ci] = weight[((co * cin + ci) * kh + ky) * kw + kx];
        return result;
    }

    /// <summary>weight[co, ci, ky, kx] += tapMajor[co, (ky·kw + kx)·Cin + ci].</summary>
    public static void AddTapMajor(float* weight, float* tapMajor, in ConvShape s)
    {
        int cin = s.InChannels, kh = s.KernelHeight, kw = s.KernelWidth, k = s.PatchLength;
        for (int co = 0; co < s.OutChannels; co++)
            for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++)
                        weight[((co * cin + ci) * kh + ky) * kw + kx] += tapMajor[co * k + (ky * kw + kx) * cin + ci];
    }

    /// <summary>The im2col rows of output pixels [p0, p0 + rows) of one image: zeros where a tap falls in the padding.</summary>
    public static void GatherColumns(ConvShape s, float* image, long rowStride, int p0, int rows, float* columns)
    {
        int k = s.PatchLength, cin = s.InChannels;
        long bytes = (long)cin * sizeof(float);
        CpuParallel.ForRanges(rows, k, (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                int oy = Math.DivRem(p0 + r, s.OutWidth, out int ox);
                float* row = columns + (long)r * k;
                for (int ky = 0; ky < s.KernelHeight; ky++)
                {
                    int iy = oy * s.Stride - s.Padding.Top + ky;
                    for (int kx = 0; kx < s.KernelWidth; kx++)
                    {
                        int ix = ox * s.Stride - s.Padding.Left + kx;
                        float* tap = row + (ky * s.KernelWidth + kx) * cin;
                        if (iy < 0 || iy >= s.Height || ix < 0 || ix >= s.Width) new Span<float>(tap, cin).Clear();
                        else Buffer.MemoryCopy(image + ((long)iy * s.Width + ix) * rowStride, tap, bytes, bytes);
                    }
                }
            }
        });
    }

    /// <summary>Adds each im2col row's gradient onto the pixels it was read from (taps in the padding are dropped).</summary>
    public static void ScatterColumns(in ConvShape s, float* columns, int p0, int rows, float* image, long rowStride)
    {
        int k = s.PatchLength, cin = s.InChannels;
        for (int r = 0; r < rows; r++)
        {
            int oy = Math.DivRem(p0 + r, s.OutWidth, out int ox);
            float* row = columns + (long)r * k;
            for (int ky = 0; ky < s.KernelHeight; ky++)
            {
                int iy = oy * s.Stride - s.Padding.Top + ky;
                if (iy < 0 || iy >= s.Height) continue;
                for (int kx = 0; kx < s.KernelWidth; kx++)
                {
                    int ix = ox * s.Stride - s.Padding.Left + kx;
                    if (ix < 0 || ix >= s.Width) continue;
                    float* pixel = image + ((long)iy * s.Width + ix) * rowStride;
                    float* tap = row + (ky * s.KernelWidth + kx) * cin;
                    CpuBackwardKernels.Accumulate(pixel, tap, cin);
                }
            }
        }
    }
}
