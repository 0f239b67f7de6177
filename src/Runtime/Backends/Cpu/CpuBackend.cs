using System.Runtime.CompilerServices;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

[assembly: InternalsVisibleTo("InFluxEdit.Tests")]

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// The CPU backend: float32 everywhere, weights widened on upload, a packed AVX-512/AVX2 GEMM under Linear and
/// Attention, and vectorised row ops split over the cores. Ops run synchronously on the calling thread (with
/// helpers), so <see cref="Synchronize"/> has nothing to wait for.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly CpuBufferPool _pool = new();

    public string Name => "cpu";

    public string Description =>
        $"CPU: {CpuParallel.ThreadCount} thread{(CpuParallel.ThreadCount == 1 ? "" : "s")}, {CpuGemm.KernelDescription}";

    public DeviceTensor Allocate(int[] shape)
    {
        long length = HostTensor.ElementCount(shape);
        return new CpuTensor((int[])shape.Clone(), _pool.Rent(length), _pool);
    }

    public DeviceTensor Upload(HostTensor host)
    {
        var tensor = (CpuTensor)Allocate(host.Shape);
        host.Data.AsSpan().CopyTo(tensor.Span);
        return tensor;
    }

    /// <summary>Widens to float32: the GEMM reads float32 panels, and 16-bit storage would only add a conversion per use.</summary>
    public DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw)
    {
        long length = HostTensor.ElementCount(shape);
        float[] data = GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
        CpuWeightConversion.ToFloat32(raw, dtype, data);
        // Weights live as long as the model; keeping their buffers pooled after disposal would only pin memory.
        return new CpuTensor((int[])shape.Clone(), data, pool: null);
    }

    /// <summary>Keeps the blocks (the array is taken, not copied): Linear and the training products decode a panel at a time.</summary>
    public DeviceTensor UploadQuantizedWeight(int[] shape, QuantizedBlocks weight) => new CpuQuantizedTensor((int[])shape.Clone(), weight);

    public bool HoldsQuantizedWeights => true;

    public HostTensor Download(View view, int[] shape)
    {
        if (HostTensor.ElementCount(shape) != view.ElementCount)
            throw new ArgumentException($"cannot download {view} as {HostTensor.FormatShape(shape)}");
        RequireInside(view, nameof(view));
        var host = new HostTensor((int[])shape.Clone());
        fixed (float* destination = host.Data)
        {
            var rows = new RowWalker(view);
            for (int i = 0; i < rows.Count; i++)
                Buffer.MemoryCopy(rows[i], destination + (long)i * view.Cols, (long)view.Cols * sizeof(float), (long)view.Cols * sizeof(float));
        }
        return host;
    }

    public void Synchronize() { }

    public void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias)
    {
        var quantized = weight as CpuQuantizedTensor;
        if (quantized is { IsDisposed: true }) throw new ObjectDisposedException(nameof(weight), $"{weight} was disposed");
        CpuTensor? w = quantized == null ? AsCpu(weight, nameof(weight)) : null;
        if (weight.Shape.Length != 2) throw new ArgumentException($"weight must be [out, in], got {weight}", nameof(weight));
        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        if (x.Cols != inFeatures) throw new ArgumentException($"{x} has {x.Cols} columns, weight {weight} takes {inFeatures}", nameof(x));
        if (y.Cols != outFeatures) throw new ArgumentException($"{y} has {y.Cols} columns, weight {weight} gives {outFeatures}", nameof(y));
        if (y.Batch != x.Batch || y.Rows != x.Rows) throw new ArgumentException($"Linear maps {x} to {y}: batch and rows differ");
        float* biasPointer = null;
        if (bias is not null)
        {
            CpuTensor b = AsCpu(bias, nameof(bias));
            if (b.Length != outFeatures) throw new ArgumentException($"bias {b} does not have {outFeatures} elements", nameof(bias));
            biasPointer = b.Pointer;
        }
        RequireInside(x, nameof(x));
        RequireInside(y, nameof(y));
        float* xBase = Base(x), yBase = Base(y);

        void Product(int rows, float* xs, float* ys)
        {
            if (quantized != null)
            {
                CpuQuantizedGemm.MultiplyTransposed(rows, xs, x.RowStride, quantized, ys, y.RowStride, biasPointer, 1f, 0f);
                return;
            }
            var problem = new GemmProblem(rows, outFeatures, inFeatures, xs, x.RowStride, w!.Pointer, inFeatures,
                bIsKByN: false, ys, y.RowStride, biasPointer);
            CpuGemm.Multiply(problem, CpuGemm.BestKernel, parallel: true);
        }

        if (x.BatchesStackAsRows && y.BatchesStackAsRows)
        {
            Product(x.Batch * x.Rows, xBase, yBase);
            return;
        }
        for (int b = 0; b < x.Batch; b++)
            Product(x.Rows, xBase + b * x.BatchStride, yBase + b * y.BatchStride);
    }

    public void LayerNorm(View y, View x, float eps)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = x.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.LayerNorm(ys[i], xs[i], n, eps);
        });
    }

    public void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps)
    {
        RequireSameShape(y, x, nameof(x));
        CpuTensor s = AsCpu(scale, nameof(scale));
        if (groupSize <= 0 || x.Cols % groupSize != 0)
            throw new ArgumentException($"{x.Cols} columns do not split into groups of {groupSize}", nameof(groupSize));
        if (s.Length != groupSize) throw new ArgumentException($"scale {s} does not have {groupSize} elements", nameof(scale));
        RowWalker ys = new(y), xs = new(x);
        int n = x.Cols;
        float* scalePointer = s.Pointer;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.RmsNorm(ys[i], xs[i], scalePointer, groupSize, n, eps);
        });
    }

    public void Modulate(View y, View x, View shift, View scale)
    {
        RequireSameShape(y, x, nameof(x));
        RequireSameShape(y, shift, nameof(shift));
        RequireSameShape(y, scale, nameof(scale));
        RowWalker ys = new(y), xs = new(x), shifts = new(shift), scales = new(scale);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.Modulate(ys[i], xs[i], shifts[i], scales[i], n);
        });
    }

    public void GatedResidual(View y, View residual, View x, View gate)
    {
        RequireSameShape(y, residual, nameof(residual));
        RequireSameShape(y, x, nameof(x));
        RequireSameShape(y, gate, nameof(gate));
        RowWalker ys = new(y), residuals = new(residual), xs = new(x), gates = new(gate);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.GatedResidual(ys[i], residuals[i], xs[i], gates[i], n);
        });
    }

    public void Add(View y, View a, View b)
    {
        RequireSameShape(y, a, nameof(a));
        RequireSameShape(y, b, nameof(b));
        RowWalker ys = new(y), As = new(a), bs = new(b);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.Add(ys[i], As[i], bs[i], n);
        });
    }

    public void Silu(View y, View x)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, 4L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.Silu(ys[i], xs[i], n);
        });
    }

    public void GeluTanh(View y, View x)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, 4L * n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.GeluTanh(ys[i], xs[i], n);
        });
    }

    public void Copy(View y, View x)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols;
        if (y.ElementCount == 0) return;
        if (y.IsContiguous && x.IsContiguous)
        {
            CpuRowKernels.Copy(ys[0], xs[0], y.ElementCount);
            return;
        }
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++) CpuRowKernels.Copy(ys[i], xs[i], n);
        });
    }

    public void ScaleShift(View y, View x, float scale, float shift)
    {
        RequireSameShape(y, x, nameof(x));
        RowWalker ys = new(y), xs = new(x);
        int n = y.Cols;
        CpuParallel.ForRanges(ys.Count, n, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float* yRow = ys[i], xRow = xs[i];
                for (int c = 0; c < n; c++) yRow[c] = scale * xRow[c] + shift;
            }
        });
    }

    public void Transpose(View y, View x)
    {
        if (y.Batch != x.Batch || y.Rows != x.Cols || y.Cols != x.Rows)
            throw new ArgumentException($"cannot transpose {x} into {y}: each sample needs [rows, cols] → [cols, rows]");
        RequireInside(y, nameof(y));
        RequireInside(x, nameof(x));
        float* yBase = Base(y), xBase = Base(x);
        // Blocks of 32×32 keep both the reads and the writes within a few cache lines.
        const int Tile = 32;
        int rowTiles = (x.Rows + Tile - 1) / Tile, colTiles = (x.Cols + Tile - 1) / Tile;
        long xBatch = x.BatchStride, xRowStride = x.RowStride, yBatch = y.BatchStride, yRowStride = y.RowStride;
        int rows = x.Rows, cols = x.Cols;
        CpuParallel.ForRanges(x.Batch * rowTiles * colTiles, Tile * Tile, (start, end) =>
        {
            for (int task = start; task < end; task++)
            {
                int b = Math.DivRem(task, rowTiles * colTiles, out int tile);
                int r0 = tile / colTiles * Tile, c0 = tile % colTiles * Tile;
                float* xs = xBase + b * xBatch, ys = yBase + b * yBatch;
                for (int r = r0; r < Math.Min(r0 + Tile, rows); r++)
                    for (int c = c0; c < Math.Min(c0 + Tile, cols); c++)
                        ys[c * yRowStride + r] = xs[r * xRowStride + c];
            }
        });
    }

    public void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod)
    {
        if (t.Cols != 1) throw new ArgumentException($"timesteps {t} must have one column", nameof(t));
        if (t.Batch != y.Batch || t.Rows != y.Rows) throw new ArgumentException($"{t} and {y} differ in batch or rows");
        if (y.Cols % 2 != 0) throw new ArgumentException($"{y} must have an even number of columns", nameof(y));
        RequireInside(y, nameof(y));
        RequireInside(t, nameof(t));
        int half = y.Cols / 2;
        // As the reference computes it even in its float64 runs: float32 frequencies, arguments rounded to
        // float32 (t.float() * freqs), cos and sin of those float32 arguments.
        var frequencies = ReferenceMath.TimestepFrequencies(half, maxPeriod);
        RowWalker ys = new(y), ts = new(t);
        for (int i = 0; i < ys.Count; i++)
        {
            float scaledTime = timeFactor * *ts[i];
            float* row = ys[i];
            for (int k = 0; k < half; k++)
            {
                float argument = scaledTime * frequencies[k];
                row[k] = (float)Math.Cos(argument);
                row[half + k] = (float)Math.Sin(argument);
            }
        }
    }

    public void RopeEmbed(View pe, View ids, int[] axesDim, float theta)
    {
        if (ids.Cols != axesDim.Length) throw new ArgumentException($"{ids} must have one column per axis ({axesDim.Length})", nameof(ids));
        if (ids.Batch != pe.Batch || ids.Rows != pe.Rows) throw new ArgumentException($"{ids} and {pe} differ in batch or rows");
        int angles = 0;
        foreach (int d in axesDim)
        {
            if (d <= 0 || d % 2 != 0) throw new ArgumentException($"axis width {d} must be positive and even", nameof(axesDim));
            angles += d / 2;
        }
        if (pe.Cols != 4 * angles) throw new ArgumentException($"{pe} must have 4·{angles} columns", nameof(pe));
        RequireInside(pe, nameof(pe));
        RequireInside(ids, nameof(ids));

        // In float64 like the reference (omega = 1/theta^(2j/d) in float64, cos/sin in float64, then float32).
        var omegas = new double[angles];
        var axisOfAngle = new int[angles];
        for (int a = 0, p = 0; a < axesDim.Length; a++)
            for (int j = 0; j < axesDim[a] / 2; j++, p++)
            {
                omegas[p] = 1.0 / Math.Pow(theta, 2.0 * j / axesDim[a]);
                axisOfAngle[p] = a;
            }
        RowWalker pes = new(pe), idRows = new(ids);
        CpuParallel.ForRanges(pes.Count, 16L * angles, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float* position = idRows[i];
                float* row = pes[i];
                for (int p = 0; p < angles; p++)
                {
                    double angle = position[axisOfAngle[p]] * omegas[p];
                    float cos = (float)Math.Cos(angle), sin = (float)Math.Sin(angle);
                    row[4 * p] = cos;
                    row[4 * p + 1] = -sin;
                    row[4 * p + 2] = sin;
                    row[4 * p + 3] = cos;
                }
            }
        });
    }

    public void ApplyRope(View y, View x, View pe, int headDim)
    {
        RequireSameShape(y, x, nameof(x));
        if (headDim <= 0 || headDim % 2 != 0 || x.Cols % headDim != 0)
            throw new ArgumentException($"{x.Cols} columns do not split into heads of even width {headDim}", nameof(headDim));
        if (pe.Cols != headDim * 2) throw new ArgumentException($"{pe} must have {headDim / 2}·4 columns", nameof(pe));
        if (pe.Batch != x.Batch || pe.Rows != x.Rows) throw new ArgumentException($"{pe} and {x} differ in batch or rows");
        RequireInside(pe, nameof(pe));
        RowWalker ys = new(y), xs = new(x), pes = new(pe);
        int heads = x.Cols / headDim;
        CpuParallel.ForRanges(ys.Count, x.Cols, (start, end) =>
        {
            float* diagonal = stackalloc float[headDim];
            float* offDiagonal = stackalloc float[headDim];
            for (int i = start; i < end; i++) CpuRowKernels.ApplyRope(ys[i], xs[i], pes[i], headDim, heads, diagonal, offDiagonal);
        });
    }

    public void Attention(View o, View q, View k, View v, int heads, float scale)
    {
        CheckAttention(o, q, k, v, heads);
        CpuAttention.Run(o, q, k, v, heads, scale);
    }

    private static void CheckAttention(View o, View q, View k, View v, int heads)
    {
        if (heads <= 0 || q.Cols % heads != 0 || v.Cols % heads != 0)
            throw new ArgumentException($"{heads} heads do not split q ({q.Cols}) and v ({v.Cols}) columns", nameof(heads));
        if (k.Cols != q.Cols) throw new ArgumentException($"keys {k} and queries {q} differ in columns");
        if (o.Cols != v.Cols) throw new ArgumentException($"output {o} and values {v} differ in columns");
        if (q.Batch != k.Batch || q.Batch != v.Batch || q.Batch != o.Batch) throw new ArgumentException("q, k, v and o differ in batch");
        if (o.Rows != q.Rows) throw new ArgumentException($"output {o} and queries {q} differ in rows");
        if (v.Rows != k.Rows) throw new ArgumentException($"values {v} and keys {k} differ in rows");
        if (k.Rows == 0 && q.Rows > 0) throw new ArgumentException("attention over zero keys is undefined");
        RequireInside(o, nameof(o));
        RequireInside(q, nameof(q));
        RequireInside(k, nameof(k));
        RequireInside(v, nameof(v));
    }

    public void Dispose() => _pool.Clear();

    internal static float* Base(View view) => AsCpu(view.Tensor, nameof(view)).Pointer + view.Offset;

    private static CpuTensor AsCpu(DeviceTensor tensor, string name)
    {
        if (tensor is CpuQuantizedTensor)
            throw new ArgumentException(QuantizedWeights.OnlyLinearReads(tensor), name);
        if (tensor is not CpuTensor cpu) throw new ArgumentException($"{tensor} is not a CPU tensor", name);
        if (cpu.IsDisposed) throw new ObjectDisposedException(name, $"{tensor} was disposed");
        return cpu;
    }

    private static void RequireSameShape(View y, View other, string name)
    {
        if (y.Batch != other.Batch || y.Rows != other.Rows || y.Cols != other.Cols)
            throw new ArgumentException($"{other} does not match the output {y}", name);
        RequireInside(y, "y");
        RequireInside(other, name);
    }

    /// <summary>Every element the view addresses lies inside its tensor, so kernels may use raw pointers.</summary>
    private static void RequireInside(View view, string name)
    {
        CpuTensor tensor = AsCpu(view.Tensor, name);
        if (view.ElementCount == 0) return;
        if (view.Offset < 0 || view.BatchStride < 0 || view.RowStride < 0 || view.Cols < 0)
            throw new ArgumentException($"{view} has a negative offset or stride", name);
        long last = view.Offset + (view.Batch - 1) * view.BatchStride + (view.Rows - 1) * view.RowStride + view.Cols - 1;
        if (last >= tensor.Length) throw new ArgumentException($"{view} reaches element {last} of a tensor of {tensor.Length}", name);
    }
}

/// <summary>Row i of a [Batch, Rows, Cols] view (i over Batch·Rows) as a pointer; works for broadcast rows (stride 0).</summary>
internal readonly unsafe struct RowWalker
{
    private readonly float* _base;
    private readonly long _batchStride, _rowStride;
    private readonly int _rows;

    public RowWalker(View view)
    {
        _base = CpuBackend.Base(view);
        _batchStride = view.BatchStride;
        _rowStride = view.RowStride;
        _rows = view.Rows;
        Count = view.Batch * view.Rows;
    }

    public int Count { get; }

    public float* this[int i]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            int b = Math.DivRem(i, _rows, out int r);
            return _base + b * _batchStride + r * _rowStride;
        }
    }
}
