using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Op-by-op checks against float64 references computed here, written against <see cref="IBackend"/> so the same
/// checks run on the CPU simulator (every test run) and on CUDA (when a GPU is present).
/// Inputs live inside larger tensors so views have offsets, row gaps and batch gaps; broadcast views use stride 0.
/// </summary>
public sealed class GpuOpChecks(IBackend backend, int seed = 1234)
{
    private readonly Random random = new(seed);

    /// <summary>A device tensor of random values with its host copy, for building strided views on both sides.</summary>
    public sealed record Backing(DeviceTensor Device, float[] Host);

    public Backing RandomBacking(int length, float scale = 1f, float offset = 0f)
    {
        var host = new float[length];
        for (int i = 0; i < length; i++)
            host[i] = offset + scale * (float)(random.NextDouble() * 2 - 1);
        return new Backing(backend.Upload(new HostTensor([length], host)), host);
    }

    /// <summary>A [batch, rows, cols] view at an offset with a row gap and a batch gap inside a random backing.</summary>
    public (View View, Backing Backing) StridedInput(int batch, int rows, int cols, float scale = 1f, float offset = 0f)
    {
        long rowStride = cols + 3;
        long batchStride = rows * rowStride + 5;
        long start = 7;
        var backing = RandomBacking((int)(start + batch * batchStride), scale, offset);
        return (new View(backing.Device, start, batch, rows, cols, batchStride, rowStride), backing);
    }

    public static double At(View view, float[] host, int b, int r, int c) =>
        host[view.Offset + b * view.BatchStride + r * view.RowStride + c];

    public float[] ReadBack(View view)
    {
        backend.Synchronize();
        return backend.Download(view, [view.Batch, view.Rows, view.Cols]).Data;
    }

    public static void AssertClose(double[] expected, float[] actual, double absolute, double relative, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(expected[i] - actual[i]);
            if (!(error <= absolute + relative * Math.Abs(expected[i])))
                Assert.Fail($"{what}: element {i} is {actual[i]}, expected {expected[i]} (error {error:E2})");
        }
    }

    public static double[] Reference(View shape, Func<int, int, int, double> element)
    {
        var result = new double[shape.Batch * shape.Rows * shape.Cols];
        int i = 0;
        for (int b = 0; b < shape.Batch; b++)
            for (int r = 0; r < shape.Rows; r++)
                for (int c = 0; c < shape.Cols; c++)
                    result[i++] = element(b, r, c);
        return result;
    }

    public static float BFloat16Round(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000u);
    }

    public static byte[] BFloat16Bytes(float[] values)
    {
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++)
            BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (ushort)(BitConverter.SingleToUInt32Bits(BFloat16Round(values[i])) >> 16));
        return bytes;
    }

    // ------------------------------------------------------------------ element-wise

    public void ElementwiseOps(int batch, int rows, int cols)
    {
        var (x, xb) = StridedInput(batch, rows, cols, scale: 4f);
        using var yTensor = backend.Allocate([batch, rows, cols]);
        var y = yTensor.AsView();

        backend.Copy(y, x);
        AssertClose(Reference(y, (b, r, c) => At(x, xb.Host, b, r, c)), ReadBack(y), 0, 0, "Copy");

        backend.Silu(y, x);
        AssertClose(Reference(y, (b, r, c) => { double v = At(x, xb.Host, b, r, c); return v / (1 + Math.Exp(-v)); }),
            ReadBack(y), 1e-6, 1e-5, "Silu");

        backend.GeluTanh(y, x);
        AssertClose(Reference(y, (b, r, c) =>
        {
            double v = At(x, xb.Host, b, r, c);
            return 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
        }), ReadBack(y), 1e-6, 1e-5, "GeluTanh");

        // A per-batch vector broadcast over rows, as modulation vectors are: [1, batch, 2·cols] split in columns.
        var vectors = RandomBacking(batch * 2 * cols);
        var vectorView = new View(vectors.Device, 0, 1, batch, 2 * cols, batch * 2L * cols, 2 * cols);
        var shift = vectorView.Columns(0, cols).BroadcastRows(rows);
        var scale = vectorView.Columns(cols, cols).BroadcastRows(rows);

        backend.Add(y, x, shift);
        AssertClose(Reference(y, (b, r, c) => At(x, xb.Host, b, r, c) + At(shift, vectors.Host, b, r, c)),
            ReadBack(y), 1e-6, 1e-6, "Add");

        backend.GatedResidual(y, y, x, scale);
        AssertClose(Reference(y, (b, r, c) =>
        {
            double v = At(x, xb.Host, b, r, c);
            return v + At(shift, vectors.Host, b, r, c) + At(scale, vectors.Host, b, r, c) * v;
        }), ReadBack(y), 1e-5, 1e-5, "GatedResidual (y aliases residual)");

        // In place on the strided input itself.
        double[] modulated = Reference(x, (b, r, c) =>
            (1 + At(scale, vectors.Host, b, r, c)) * At(x, xb.Host, b, r, c) + At(shift, vectors.Host, b, r, c));
        backend.Modulate(x, x, shift, scale);
        AssertClose(modulated, ReadBack(x), 1e-5, 1e-5, "Modulate (y aliases x)");

        // The gaps between rows and batches must be untouched by the in-place op.
        backend.Synchronize();
        var whole = backend.Download(xb.Device.AsView(), [xb.Host.Length]).Data;
        var covered = new HashSet<long>();
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                    covered.Add(x.Offset + b * x.BatchStride + r * x.RowStride + c);
        for (int i = 0; i < xb.Host.Length; i++)
            if (!covered.Contains(i))
                Assert.Equal(xb.Host[i], whole[i]);
        xb.Device.Dispose();
        vectors.Device.Dispose();
    }

    // ------------------------------------------------------------------ row reductions

    public void LayerNorm(int batch, int rows, int cols, float offset)
    {
        var (x, xb) = StridedInput(batch, rows, cols, scale: 2f, offset: offset);
        double[] expected = Reference(x, (b, r, c) =>
        {
            double mean = 0, variance = 0;
            for (int k = 0; k < cols; k++) mean += At(x, xb.Host, b, r, k);
            mean /= cols;
            for (int k = 0; k < cols; k++) { double d = At(x, xb.Host, b, r, k) - mean; variance += d * d; }
            variance /= cols;
            return (At(x, xb.Host, b, r, c) - mean) / Math.Sqrt(variance + 1e-6);
        });
        backend.LayerNorm(x, x, 1e-6f);
        AssertClose(expected, ReadBack(x), 2e-4, 2e-4, $"LayerNorm [{batch}, {rows}, {cols}] in place");
        xb.Device.Dispose();
    }

    public void RmsNorm(int batch, int rows, int groupSize, int groupsPerRow, bool bf16MatrixScale)
    {
        int cols = groupSize * groupsPerRow;
        var (x, xb) = StridedInput(batch, rows, cols, scale: 3f);
        var scaleValues = new float[groupSize];
        for (int i = 0; i < groupSize; i++)
            scaleValues[i] = bf16MatrixScale ? BFloat16Round(0.5f + i * 0.01f) : 0.5f + i * 0.01f;
        using var scale = bf16MatrixScale
            ? backend.UploadWeight([1, groupSize], DType.BF16, BFloat16Bytes(scaleValues))
            : backend.UploadWeight([groupSize], DType.F32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(scaleValues.AsSpan()));
        using var yTensor = backend.Allocate([batch, rows, cols]);
        var y = yTensor.AsView();
        backend.RmsNorm(y, x, scale, groupSize, 1e-6f);
        double[] expected = Reference(y, (b, r, c) =>
        {
            int first = c / groupSize * groupSize;
            double squares = 0;
            for (int k = first; k < first + groupSize; k++) squares += At(x, xb.Host, b, r, k) * At(x, xb.Host, b, r, k);
            return At(x, xb.Host, b, r, c) / Math.Sqrt(squares / groupSize + 1e-6) * scaleValues[c - first];
        });
        AssertClose(expected, ReadBack(y), 1e-5, 1e-5, $"RmsNorm group {groupSize}×{groupsPerRow}");
        xb.Device.Dispose();
    }

    // ------------------------------------------------------------------ embeddings

    public void TimestepEmbedding(float[] times, int half)
    {
        // Timesteps in every third element: a column view with row stride 3.
        var host = new float[times.Length * 3];
        for (int i = 0; i < times.Length; i++) host[3 * i + 1] = times[i];
        using var backing = backend.Upload(new HostTensor([host.Length], host));
        var t = new View(backing, 1, 1, times.Length, 1, times.Length * 3, 3);
        using var yTensor = backend.Allocate([times.Length, 2 * half]);
        var y = yTensor.AsView();
        backend.TimestepEmbedding(y, t, 1000f, 10000f);
        // Frequencies as the reference rounds them (ReferenceMathTests checks them against Math.Exp).
        float[] frequencies = ReferenceMath.TimestepFrequencies(half, 10000f);
        double[] expected = Reference(y, (_, r, c) =>
        {
            int k = c < half ? c : c - half;
            float argument = 1000f * times[r] * frequencies[k];
            return c < half ? Math.Cos(argument) : Math.Sin(argument);
        });
        AssertClose(expected, ReadBack(y), 2e-6, 0, "TimestepEmbedding");
    }

    public void RopeEmbedAndApply(int batch, int tokens, int[] axesDim, int heads)
    {
        int angles = axesDim.Sum() / 2;
        var ids = new float[batch * tokens * axesDim.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = random.Next(0, 96);
        using var idsTensor = backend.Upload(new HostTensor([batch, tokens, axesDim.Length], ids));
        using var peTensor = backend.Allocate([batch, tokens, 4 * angles]);
        backend.RopeEmbed(peTensor.AsView(), idsTensor.AsView(), axesDim, 10000f);

        var angle = new double[batch, tokens, angles];
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < tokens; r++)
            {
                int p = 0;
                for (int a = 0; a < axesDim.Length; a++)
                    for (int j = 0; j < axesDim[a] / 2; j++)
                        angle[b, r, p++] = ids[(b * tokens + r) * axesDim.Length + a] * Math.Pow(10000.0, -2.0 * j / axesDim[a]);
            }
        double[] expectedPe = Reference(peTensor.AsView(), (b, r, c) =>
        {
            double th = angle[b, r, c / 4];
            return (c % 4) switch { 0 => Math.Cos(th), 1 => -Math.Sin(th), 2 => Math.Sin(th), _ => Math.Cos(th) };
        });
        AssertClose(expectedPe, ReadBack(peTensor.AsView()), 2e-6, 0, "RopeEmbed");

        int headDim = 2 * angles;
        var (x, xb) = StridedInput(batch, tokens, heads * headDim);
        double[] expected = Reference(x, (b, r, c) =>
        {
            int pair = c / 2, p = pair % angles;
            double x0 = At(x, xb.Host, b, r, 2 * pair), x1 = At(x, xb.Host, b, r, 2 * pair + 1);
            double th = angle[b, r, p];
            return c % 2 == 0 ? Math.Cos(th) * x0 - Math.Sin(th) * x1 : Math.Sin(th) * x0 + Math.Cos(th) * x1;
        });
        backend.ApplyRope(x, x, peTensor.AsView(), headDim);
        AssertClose(expected, ReadBack(x), 1e-5, 1e-5, "ApplyRope (y aliases x)");
        xb.Device.Dispose();
    }

    // ------------------------------------------------------------------ linear

    public void Linear(int batch, int rows, int inFeatures, int outFeatures, DType weightType, bool withBias,
        bool broadcastRows = false, double tolerance = 1e-4)
    {
        var (x, xb) = StridedInput(batch, broadcastRows ? 1 : rows, inFeatures);
        if (broadcastRows)
            x = x with { Rows = rows, RowStride = 0 };
        var weights = new float[outFeatures * inFeatures];
        for (int i = 0; i < weights.Length; i++) weights[i] = (float)(random.NextDouble() * 2 - 1) / MathF.Sqrt(inFeatures);
        byte[] raw = weightType switch
        {
            DType.F32 => System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights.AsSpan()).ToArray(),
            DType.BF16 => BFloat16Bytes(weights),
            DType.F16 => weights.SelectMany(w => BitConverter.GetBytes((Half)w)).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(weightType)),
        };
        float Stored(int i) => weightType switch
        {
            DType.BF16 => BFloat16Round(weights[i]),
            DType.F16 => (float)(Half)weights[i],
            _ => weights[i],
        };
        using var w = backend.UploadWeight([outFeatures, inFeatures], weightType, raw);
        var biasValues = new float[outFeatures];
        for (int i = 0; i < outFeatures; i++) biasValues[i] = i * 0.25f - 1f;
        using var bias = backend.UploadWeight([outFeatures], DType.F32,
            System.Runtime.InteropServices.MemoryMarshal.AsBytes(biasValues.AsSpan()));

        // The output is a column slice of a wider tensor, as q/k/v slices of a fused projection are.
        using var wide = backend.Allocate([batch, rows, outFeatures + 4]);
        var y = wide.AsView().Columns(2, outFeatures);
        backend.Linear(y, x, w, withBias ? bias : null);
        double[] expected = Reference(y, (b, r, n) =>
        {
            double sum = withBias ? biasValues[n] : 0;
            for (int k = 0; k < inFeatures; k++)
                sum += At(x, xb.Host, b, r, k) * Stored(n * inFeatures + k);
            return sum;
        });
        AssertClose(expected, ReadBack(y), tolerance, tolerance, $"Linear {weightType} [{batch}, {rows}, {inFeatures}] → {outFeatures}");
        xb.Device.Dispose();
    }

    // ------------------------------------------------------------------ attention

    /// <summary>
    /// Attention against float64, within absolute·spread + relative·|expected| (defaults: float32 parity).
    /// </summary>
    public void Attention(int batch, int heads, int headDim, int queryRows, int keyRows, float spread,
        double absolute = 2e-5, double relative = 1e-4)
    {
        int width = heads * headDim;
        // q, k and v are column slices of fused [batch, rows, 3·width] projections, as in the model.
        var (qkv, qb) = StridedInput(batch, queryRows, 3 * width, scale: spread);
        var (kvOnly, kb) = StridedInput(batch, keyRows, 3 * width, scale: spread);
        var q = qkv.Columns(0, width);
        var k = kvOnly.Columns(width, width);
        var v = kvOnly.Columns(2 * width, width);
        using var oTensor = backend.Allocate([batch, queryRows, width]);
        float scale = 1f / MathF.Sqrt(headDim);
        backend.Attention(oTensor.AsView(), q, k, v, heads, scale);

        var expected = AttentionReference.Compute(batch, heads, headDim, queryRows, keyRows, scale,
            (b, r, c) => At(q, qb.Host, b, r, c), (b, r, c) => At(k, kb.Host, b, r, c), (b, r, c) => At(v, kb.Host, b, r, c));
        AssertClose(expected, ReadBack(oTensor.AsView()), absolute * spread, relative,
            $"Attention B{batch} H{heads} D{headDim} Lq{queryRows} Lk{keyRows}");
        qb.Device.Dispose();
        kb.Device.Dispose();
    }
}
