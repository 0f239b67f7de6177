using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;
using static InFluxEdit.Tests.Gpu.GpuOpChecks;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The text encoders' ops against float64 references computed here, on any <see cref="IBackend"/>: the CPU backend,
/// the ILGPU simulator and CUDA run the same checks. Inputs are strided views (offsets, row and batch gaps).
/// </summary>
public sealed class TextOpChecks(IBackend backend, int seed = 777)
{
    private readonly Random random = new(seed);
    private readonly GpuOpChecks views = new(backend, seed);

    private DeviceTensor Weight(float[] values, int[] shape, DType dtype) => dtype switch
    {
        DType.F32 => backend.UploadWeight(shape, DType.F32, MemoryMarshal.AsBytes(values.AsSpan())),
        DType.BF16 => backend.UploadWeight(shape, DType.BF16, BFloat16Bytes(values)),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    private float[] RandomValues(int count, float scale = 1f) =>
        Enumerable.Range(0, count).Select(_ => scale * (float)(random.NextDouble() * 2 - 1)).ToArray();

    /// <summary>Rows of a table by id (ids in a strided column view), then positions added in place.</summary>
    public void EmbeddingAndPositions(int batch, int tokens, int vocab, int dim, DType tableType)
    {
        float[] table = RandomValues(vocab * dim);
        float Stored(int i) => tableType == DType.BF16 ? BFloat16Round(table[i]) : table[i];
        using var tableTensor = Weight(table, [vocab, dim], tableType);
        var ids = Enumerable.Range(0, batch * tokens).Select(_ => (float)random.Next(vocab)).ToArray();
        ids[0] = vocab - 1;
        // Ids in every second element, as a [batch, tokens, 1] view with row stride 2.
        var idHost = new float[ids.Length * 2 + 1];
        for (int i = 0; i < ids.Length; i++) idHost[1 + 2 * i] = ids[i];
        using var idBacking = backend.Upload(new HostTensor([idHost.Length], idHost));
        var idView = new View(idBacking, 1, batch, tokens, 1, 2L * tokens, 2);

        using var yTensor = backend.Allocate([batch, tokens, dim]);
        var y = yTensor.AsView();
        backend.Embedding(y, idView, tableTensor);
        double[] gathered = Reference(y, (b, r, c) => Stored((int)ids[b * tokens + r] * dim + c));
        AssertClose(gathered, views.ReadBack(y), 0, 0, $"Embedding {tableType}");

        float[] positions = RandomValues((tokens + 3) * dim);
        using var positionTensor = Weight(positions, [tokens + 3, dim], DType.F32);
        backend.AddPositionEmbedding(y, y, positionTensor);
        AssertClose(Reference(y, (b, r, c) => gathered[(b * tokens + r) * dim + c] + positions[r * dim + c]),
            views.ReadBack(y), 1e-6, 1e-6, "AddPositionEmbedding (y aliases x)");
    }

    /// <summary>CPU only: ids that are not rows of the table are refused (a GPU kernel writes NaN rows instead).</summary>
    public void EmbeddingRefusesBadIds(float badId)
    {
        using var table = Weight(RandomValues(4 * 3), [4, 3], DType.F32);
        using var ids = backend.Upload(new HostTensor([1, 2, 1], [1f, badId]));
        using var y = backend.Allocate([1, 2, 3]);
        Assert.Throws<ArgumentException>(() => backend.Embedding(y, ids, table));
    }

    public void EmbeddingMarksBadIdsAsNaN(float badId)
    {
        using var table = Weight(RandomValues(4 * 3), [4, 3], DType.F32);
        using var ids = backend.Upload(new HostTensor([1, 2, 1], [1f, badId]));
        using var y = backend.Allocate([1, 2, 3]);
        backend.Embedding(y, ids, table);
        float[] result = views.ReadBack(y.AsView());
        Assert.All(result.Take(3), v => Assert.False(float.IsNaN(v)));
        Assert.All(result.Skip(3), v => Assert.True(float.IsNaN(v)));
    }

    public void AffineLayerNormQuickGeluAndMultiply(int batch, int rows, int cols, bool withBias)
    {
        var (x, xb) = views.StridedInput(batch, rows, cols, scale: 3f, offset: 2f);
        float[] scale = RandomValues(cols), bias = RandomValues(cols);
        using var scaleTensor = Weight(scale, [cols], DType.F32);
        using var biasTensor = Weight(bias, [cols], DType.F32);
        using var yTensor = backend.Allocate([batch, rows, cols]);
        var y = yTensor.AsView();
        backend.AffineLayerNorm(y, x, scaleTensor, withBias ? biasTensor : null, 1e-5f);
        double[] normalised = Reference(y, (b, r, c) =>
        {
            double mean = 0, variance = 0;
            for (int k = 0; k < cols; k++) mean += At(x, xb.Host, b, r, k);
            mean /= cols;
            for (int k = 0; k < cols; k++) { double d = At(x, xb.Host, b, r, k) - mean; variance += d * d; }
            variance /= cols;
            return (At(x, xb.Host, b, r, c) - mean) / Math.Sqrt(variance + 1e-5) * scale[c] + (withBias ? bias[c] : 0);
        });
        AssertClose(normalised, views.ReadBack(y), 2e-5, 2e-5, $"AffineLayerNorm bias={withBias}");

        backend.QuickGelu(y, x);
        AssertClose(Reference(y, (b, r, c) => { double v = At(x, xb.Host, b, r, c); return v / (1 + Math.Exp(-1.702 * v)); }),
            views.ReadBack(y), 1e-6, 1e-5, "QuickGelu");

        backend.Multiply(x, x, y);
        AssertClose(Reference(y, (b, r, c) => { double v = At(x, xb.Host, b, r, c); return v * v / (1 + Math.Exp(-1.702 * v)); }),
            views.ReadBack(x), 1e-5, 1e-5, "Multiply (y aliases a)");
        xb.Device.Dispose();
    }

    /// <summary>T5's bias table looked up per (head, query, key) with buckets from the independent float64 formula.</summary>
    public void RelativePositionBias(int heads, int queries, int keys, int buckets, int maxDistance)
    {
        float[] table = RandomValues(buckets * heads);
        using var tableTensor = Weight(table, [buckets, heads], DType.F32);
        using var biasTensor = backend.Allocate([heads, queries, keys]);
        backend.RelativePositionBias(biasTensor, tableTensor, buckets, maxDistance, bidirectional: true);
        double[] expected = Reference(biasTensor.AsView(), (h, i, j) =>
            table[RelativeBucketReference.Bidirectional(j - i, buckets, maxDistance) * heads + h]);
        AssertClose(expected, views.ReadBack(biasTensor.AsView()), 0, 0, $"RelativePositionBias {queries}×{keys}");
    }

    /// <summary>Attention with a per-head bias and/or the causal mask against a naive float64 softmax.</summary>
    public void MaskedAttention(int batch, int heads, int headDim, int queryRows, int keyRows, bool withBias, bool causal)
    {
        int width = heads * headDim;
        var (qkv, qb) = views.StridedInput(batch, queryRows, 3 * width, scale: 2f);
        var (kv, kb) = views.StridedInput(batch, keyRows, 3 * width, scale: 2f);
        var q = qkv.Columns(0, width);
        var k = kv.Columns(width, width);
        var v = kv.Columns(2 * width, width);
        var (bias, biasBacking) = views.StridedInput(heads, queryRows, keyRows, scale: 3f);
        using var oTensor = backend.Allocate([batch, queryRows, width]);
        float scale = withBias ? 1f : 1f / MathF.Sqrt(headDim);
        backend.MaskedAttention(oTensor.AsView(), q, k, v, heads, scale, withBias ? bias : (View?)null, causal);

        var expected = new double[batch * queryRows * width];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < queryRows; i++)
                {
                    int visible = causal ? Math.Min(keyRows, i + 1) : keyRows;
                    var scores = new double[visible];
                    for (int j = 0; j < visible; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < headDim; d++)
                            dot += At(q, qb.Host, b, i, h * headDim + d) * At(k, kb.Host, b, j, h * headDim + d);
                        scores[j] = dot * scale + (withBias ? At(bias, biasBacking.Host, h, i, j) : 0);
                    }
                    double max = scores.Max(), total = 0;
                    for (int j = 0; j < visible; j++) total += scores[j] = Math.Exp(scores[j] - max);
                    for (int d = 0; d < headDim; d++)
                    {
                        double sum = 0;
                        for (int j = 0; j < visible; j++) sum += scores[j] * At(v, kb.Host, b, j, h * headDim + d);
                        expected[(b * queryRows + i) * width + h * headDim + d] = sum / total;
                    }
                }
        AssertClose(expected, views.ReadBack(oTensor.AsView()), 5e-5, 1e-4,
            $"MaskedAttention B{batch} H{heads} D{headDim} Lq{queryRows} Lk{keyRows} bias={withBias} causal={causal}");
        qb.Device.Dispose();
        kb.Device.Dispose();
        biasBacking.Device.Dispose();
    }

    /// <summary>The row at the first position of each sample's largest id, ties included.</summary>
    public void GatherArgmaxRows(int batch, int tokens, int cols)
    {
        var (x, xb) = views.StridedInput(batch, tokens, cols);
        var ids = new float[batch * tokens];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < tokens; t++) ids[b * tokens + t] = random.Next(100);
            // The largest id twice: the first one must win (CLIP pads with the end token).
            int first = random.Next(tokens);
            ids[b * tokens + first] = 1000;
            for (int t = first + 1; t < tokens; t++) ids[b * tokens + t] = 1000;
        }
        using var idTensor = backend.Upload(new HostTensor([batch, tokens], ids));
        using var yTensor = backend.Allocate([batch, cols]);
        backend.GatherArgmaxRows(yTensor.AsView().Reshape(batch, 1, cols), x, idTensor.AsView().Reshape(batch, 1, tokens));
        double[] expected = Reference(yTensor.AsView().Reshape(1, batch, cols), (_, b, c) =>
        {
            int best = 0;
            for (int t = 1; t < tokens; t++)
                if (ids[b * tokens + t] > ids[b * tokens + best]) best = t;
            return At(x, xb.Host, b, best, c);
        });
        AssertClose(expected, views.ReadBack(yTensor.AsView()), 0, 0, "GatherArgmaxRows");
        xb.Device.Dispose();
    }
}

/// <summary>
/// T5's bucketing written out in float64 from the formula (spec §7), independent of the runtime's float32 version:
/// 16 buckets per side, the upper half for keys after the query, 8 exact distances, then
/// 8 + ⌊ln(a/8)/ln(max/8)·8⌋ capped at 15.
/// </summary>
public static class RelativeBucketReference
{
    public static int Bidirectional(int relative, int buckets, int maxDistance)
    {
        int half = buckets / 2;
        int bucket = relative > 0 ? half : 0;
        int a = Math.Abs(relative);
        int exact = half / 2;
        if (a < exact) return bucket + a;
        double logarithmic = Math.Log((double)a / exact) / Math.Log((double)maxDistance / exact) * (half - exact);
        return bucket + Math.Min(half - 1, exact + (int)Math.Floor(logarithmic));
    }
}
