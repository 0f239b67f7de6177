using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The text encoders' ops (see <see cref="IBackend.Embedding"/> and what follows it). Token tables keep their
/// storage dtype (a bf16 T5 vocabulary stays 16-bit and is widened per gathered element); the small position and
/// relative-bias tables are read as float32 (<see cref="GpuTensor.AsFloat32"/> widens a 16-bit one once).
/// </summary>
public sealed partial class IlgpuBackend
{
    private TextKernelSet? textKernelSet;

    private TextKernelSet TextOps =>
        LazyInitializer.EnsureInitialized(ref textKernelSet, () => new TextKernelSet(accelerator));

    public void Embedding(View y, View ids, DeviceTensor table)
    {
        var t = OwnTensor(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[1] != y.Cols)
            throw new ArgumentException($"table {t} must be [vocab, {y.Cols}] for {y}", nameof(table));
        if (ids.Cols != 1 || ids.Batch != y.Batch || ids.Rows != y.Rows)
            throw new ArgumentException($"ids {ids} must have one column per row of {y}", nameof(ids));
        var (count, ys, yd) = Output(y);
        var (idLayout, idData) = Strided(ids, nameof(ids));
        if (count == 0) return;
        int vocab = t.Shape[0];
        switch (t.DType)
        {
            case DType.F32:
                TextOps.EmbeddingFloat32(count, y.Cols, vocab, ys, yd, idLayout, idData, t.Floats);
                break;
            case DType.BF16:
                TextOps.EmbeddingBFloat16(count, y.Cols, vocab, ys, yd, idLayout, idData, t.Words);
                break;
            case DType.F16:
                TextOps.EmbeddingFloat16(count, y.Cols, vocab, ys, yd, idLayout, idData, t.Words);
                break;
            default:
                throw new NotSupportedException($"embedding tables stored as {t.DType}");
        }
    }

    public void AddPositionEmbedding(View y, View x, DeviceTensor table)
    {
        var t = OwnTensor(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[1] != y.Cols || t.Shape[0] < y.Rows)
            throw new ArgumentException($"position table {t} must be [≥ {y.Rows}, {y.Cols}] for {y}", nameof(table));
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        TextOps.AddPosition(count, y.Cols, y.Rows, ys, yd, xs, xd, t.AsFloat32().Floats);
    }

    public void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps)
    {
        var s = OwnTensor(scale, nameof(scale)).AsFloat32();
        var b = bias is null ? null : OwnTensor(bias, nameof(bias)).AsFloat32();
        if (s.Length != y.Cols) throw new ArgumentException($"scale {s} does not have {y.Cols} elements", nameof(scale));
        if (b is not null && b.Length != y.Cols) throw new ArgumentException($"bias {b} does not have {y.Cols} elements", nameof(bias));
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        int rows = y.Batch * y.Rows;
        int group = GroupSizeFor(y.Cols, launch.RowGroup);
        TextOps.AffineLayerNorm(new KernelConfig(rows, group), y.Cols, eps, ys, yd, xs, xd, s.Floats, b?.Floats ?? default, b is null ? 0 : 1);
    }

    public void QuickGelu(View y, View x)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Operand(x, y, nameof(x));
        TextOps.QuickGelu(count, y.Cols, ys, yd, xs, xd);
    }

    public void Multiply(View y, View a, View b)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (aLayout, aData) = Operand(a, y, nameof(a));
        var (bLayout, bData) = Operand(b, y, nameof(b));
        TextOps.Multiply(count, y.Cols, ys, yd, aLayout, aData, bLayout, bData);
    }

    public void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional)
    {
        var t = OwnTensor(table, nameof(table));
        if (t.Shape.Length != 2 || t.Shape[0] != buckets || t.Shape[1] != bias.Batch)
            throw new ArgumentException($"table {t} must be [{buckets} buckets, {bias.Batch} heads] for {bias}", nameof(table));
        var (count, bs, bd) = Output(bias);
        if (count == 0) return;
        int queries = bias.Rows, keys = bias.Cols;
        // Host-computed buckets (the same table the CPU backend uses), uploaded once per length and bucket setting.
        var bucketTable = Table($"t5-buckets:{queries}:{keys}:{buckets}:{maxDistance}:{bidirectional}",
            () => RelativePositionBuckets.Compute(queries, keys, buckets, maxDistance, bidirectional));
        TextOps.RelativePositionBias(count, keys, queries, bias.Batch, bs, bd, bucketTable, t.AsFloat32().Floats);
    }

    public void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal)
    {
        if (bias is View b && (b.Batch != heads || b.Rows != q.Rows || b.Cols != k.Rows))
            throw new ArgumentException($"bias {b} must be [{heads} heads, {q.Rows} queries, {k.Rows} keys]", nameof(bias));
        AttentionCore(o, q, k, v, heads, scale, bias, causal);
    }

    public void GatherArgmaxRows(View y, View x, View ids)
    {
        if (ids.Batch != x.Batch || ids.Rows != 1 || ids.Cols != x.Rows)
            throw new ArgumentException($"ids {ids} must be [{x.Batch}, 1, {x.Rows}] for {x}", nameof(ids));
        if (y.Batch != x.Batch || y.Rows != 1 || y.Cols != x.Cols)
            throw new ArgumentException($"y {y} must be [{x.Batch}, 1, {x.Cols}] for {x}", nameof(y));
        if (x.Rows == 0) throw new ArgumentException("argmax over zero positions is undefined", nameof(x));
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Strided(x, nameof(x));
        var (idLayout, idData) = Strided(ids, nameof(ids));
        TextOps.GatherArgmaxRows(count, y.Cols, x.Rows, ys, yd, xs, xd, idLayout, idData);
    }
}
