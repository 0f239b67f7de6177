using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The training ops of a GPU backend (the simulator on every run, CUDA where present) against the CPU backend, whose
/// ops are themselves checked against finite differences and float64 references. Every check uploads the same random
/// data to both backends, runs the op on views with offsets, row gaps and batch gaps (or the aliasing the contract
/// allows), and compares the whole backing tensors: inside the views within a tolerance, outside them exactly (an op
/// must not write there). Failures name the op, the sizes, the worst element and the largest error.
/// </summary>
public sealed class TrainingOpChecks(ITrainingBackend gpu, int seed = 4321) : IDisposable
{
    private readonly CpuBackend cpu = new();
    private readonly Random random = new(seed);
    private readonly List<DeviceTensor> owned = [];

    /// <summary>The same random data on both backends.</summary>
    public sealed class Twin(DeviceTensor onGpu, DeviceTensor onCpu, float[] host)
    {
        public DeviceTensor Gpu { get; } = onGpu;
        public DeviceTensor Cpu { get; } = onCpu;
        public float[] Host { get; } = host;
    }

    /// <summary>One view layout over a twin: the same offsets and strides on both sides.</summary>
    public readonly record struct Pair(Twin Backing, long Offset, int Batch, int Rows, int Cols, long BatchStride, long RowStride)
    {
        public View Gpu => new(Backing.Gpu, Offset, Batch, Rows, Cols, BatchStride, RowStride);
        public View Cpu => new(Backing.Cpu, Offset, Batch, Rows, Cols, BatchStride, RowStride);
        public Pair Columns(int start, int count) => this with { Offset = Offset + start, Cols = count };
        public override string ToString() => $"[{Batch}, {Rows}, {Cols}] (offset {Offset}, strides {BatchStride}/{RowStride})";
    }

    public Twin Backing(int length, float scale = 1f, float offset = 0f)
    {
        var host = new float[length];
        for (int i = 0; i < length; i++) host[i] = offset + scale * (float)(random.NextDouble() * 2 - 1);
        return Upload(host);
    }

    private Twin Upload(float[] host)
    {
        var g = gpu.Upload(new HostTensor([host.Length], (float[])host.Clone()));
        var c = cpu.Upload(new HostTensor([host.Length], (float[])host.Clone()));
        owned.Add(g);
        owned.Add(c);
        return new Twin(g, c, host);
    }

    /// <summary>
    /// [batch, rows, cols] at an offset, with a row gap and a batch gap; or dense; or (sliceable) with row gaps only,
    /// from element 0, so that column slices of it are seen as disjoint by the exact overlap rule.
    /// </summary>
    public Pair Input(int batch, int rows, int cols, float scale = 1f, bool dense = false, float offset = 0f, bool sliceable = false)
    {
        long rowStride = dense ? cols : cols + 3;
        long batchStride = dense || sliceable ? rows * rowStride : rows * rowStride + 5;
        long start = dense || sliceable ? 0 : 7;
        var twin = Backing((int)Math.Max(1, start + batch * batchStride), scale, offset);
        return new Pair(twin, start, batch, rows, cols, batchStride, rowStride);
    }

    /// <summary>Both backings, compared in full: within tolerance inside, bit-equal where neither side should write.</summary>
    public void AssertSame(Twin twin, string what, double absolute = 1e-5, double relative = 1e-4)
    {
        gpu.Synchronize();
        var g = gpu.Download(View.Of(twin.Gpu), [twin.Host.Length]).Data;
        var c = cpu.Download(View.Of(twin.Cpu), [twin.Host.Length]).Data;
        double worst = 0;
        int worstIndex = -1;
        for (int i = 0; i < c.Length; i++)
        {
            if (float.IsNaN(c[i]) && float.IsNaN(g[i]) || c[i] == g[i]) continue;
            double error = Math.Abs((double)c[i] - g[i]);
            if (double.IsNaN(error)) error = double.PositiveInfinity;
            double excess = error / (absolute + relative * Math.Abs(c[i]));
            if (excess > worst)
            {
                worst = excess;
                worstIndex = i;
            }
        }
        if (worst > 1)
        {
            double maxError = 0;
            for (int i = 0; i < c.Length; i++)
                if (!(float.IsNaN(c[i]) && float.IsNaN(g[i]))) maxError = Math.Max(maxError, Math.Abs((double)c[i] - g[i]));
            Assert.Fail($"{gpu.Name}: {what}: element {worstIndex} of {c.Length} is {g[worstIndex]} on the GPU backend, " +
                $"{c[worstIndex]} on the CPU (was {twin.Host[worstIndex]} before); max abs error {maxError:E3}, " +
                $"tolerance {absolute:E1} + {relative:E1}·|x|");
        }
    }

    private static string Sizes(params Pair[] views) => string.Join(", ", views.Select(v => v.ToString()));

    // ------------------------------------------------------------------ products

    public enum Batching
    {
        /// <summary>a, b and c with the same batch.</summary>
        Same,
        /// <summary>b has Batch 1, reused for every batch (a weight).</summary>
        SharedB,
        /// <summary>a has Batch 1, reused.</summary>
        SharedA,
        /// <summary>b has the batch count with BatchStride 0.</summary>
        BroadcastB,
        /// <summary>c has Batch 1: the products of all batches are summed into it.</summary>
        SumIntoOne,
    }

    public void Gemm(int batch, int m, int n, int k, bool transposeA, bool transposeB, Batching batching,
        float alpha = 0.75f, float beta = -1.5f, bool dense = false, double tolerance = 1e-4)
    {
        int aBatch = batching == Batching.SharedA ? 1 : batch;
        int bBatch = batching is Batching.SharedB or Batching.BroadcastB ? 1 : batch;
        int cBatch = batching == Batching.SumIntoOne ? 1 : batch;
        var a = Input(aBatch, transposeA ? k : m, transposeA ? m : k, dense: dense);
        var b = Input(bBatch, transposeB ? n : k, transposeB ? k : n, dense: dense);
        if (batching == Batching.BroadcastB) b = b with { Batch = batch, BatchStride = 0 };
        var c = Input(cBatch, m, n, dense: dense);
        gpu.Gemm(c.Gpu, a.Gpu, transposeA, b.Gpu, transposeB, alpha, beta);
        cpu.Gemm(c.Cpu, a.Cpu, transposeA, b.Cpu, transposeB, alpha, beta);
        AssertSame(c.Backing, $"Gemm {batching} m {m} n {n} k {k} tA {transposeA} tB {transposeB} alpha {alpha} beta {beta}: {Sizes(c, a, b)}",
            tolerance, tolerance);
    }

    /// <summary>beta = 0 does not read c (NaN there is overwritten); alpha = 0 does not read a or b (NaN there is ignored).</summary>
    public void GemmSpecialScalars()
    {
        const int m = 17, n = 9, k = 5;
        var a = Input(2, m, k);
        var b = Input(1, k, n);
        var nanC = Upload(Enumerable.Repeat(float.NaN, 2 * m * n + 3).ToArray());
        var c = new Pair(nanC, 3, 2, m, n, (long)m * n, n);
        gpu.Gemm(c.Gpu, a.Gpu, false, b.Gpu, false, 1f, 0f);
        cpu.Gemm(c.Cpu, a.Cpu, false, b.Cpu, false, 1f, 0f);
        AssertSame(nanC, "Gemm beta = 0 over NaN");
        Assert.DoesNotContain(gpu.Download(c.Gpu, [2, m, n]).Data, float.IsNaN);

        var nanA = Upload(Enumerable.Repeat(float.NaN, m * k).ToArray());
        var a2 = new Pair(nanA, 0, 1, m, k, (long)m * k, k);
        var c2 = Input(1, m, n);
        gpu.Gemm(c2.Gpu, a2.Gpu, false, b.Gpu, false, 0f, 0.5f);
        cpu.Gemm(c2.Cpu, a2.Cpu, false, b.Cpu, false, 0f, 0.5f);
        AssertSame(c2.Backing, "Gemm alpha = 0 with NaN in a", 0, 0);
        // K = 0 and beta = 0: c becomes zero.
        var empty = Input(1, m, 0);
        var emptyB = Input(1, 0, n);
        var c3 = Input(1, m, n);
        gpu.Gemm(c3.Gpu, empty.Gpu, false, emptyB.Gpu, false, 1f, 0f);
        cpu.Gemm(c3.Cpu, empty.Cpu, false, emptyB.Cpu, false, 1f, 0f);
        AssertSame(c3.Backing, "Gemm K = 0", 0, 0);
    }

    /// <summary>
    /// A 16-bit weight passed as View.Of(weight) (kept 16-bit on the GPU backend): dx = dy·W, y = x·Wᵀ and
    /// dx = dy·W for a batch (the weight reused), against the CPU backend's float32 copy of the same bf16 values.
    /// </summary>
    public void GemmWithSixteenBitWeight(DType dtype, int batch, int rows, int inFeatures, int outFeatures, double tolerance = 1e-4)
    {
        var values = new float[outFeatures * inFeatures];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        byte[] raw = dtype == DType.BF16
            ? GpuOpChecks.BFloat16Bytes(values)
            : values.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray();
        using var gpuWeight = gpu.UploadWeight([outFeatures, inFeatures], dtype, raw);
        using var cpuWeight = cpu.UploadWeight([outFeatures, inFeatures], dtype, raw);
        Assert.Equal(dtype, gpuWeight.DType);

        var dy = Input(batch, rows, outFeatures);
        var dx = Input(batch, rows, inFeatures);
        gpu.Gemm(dx.Gpu, dy.Gpu, false, View.Of(gpuWeight), false, 1f, 0f);
        cpu.Gemm(dx.Cpu, dy.Cpu, false, View.Of(cpuWeight), false, 1f, 0f);
        AssertSame(dx.Backing, $"Gemm dx = dy·W, {dtype} weight [{outFeatures}, {inFeatures}], dy {dy}", tolerance, tolerance);

        var x = Input(batch, rows, inFeatures, dense: true);
        var y = Input(batch, rows, outFeatures, dense: true);
        gpu.Gemm(y.Gpu, x.Gpu, false, View.Of(gpuWeight), true, 1f, 1f);
        cpu.Gemm(y.Cpu, x.Cpu, false, View.Of(cpuWeight), true, 1f, 1f);
        AssertSame(y.Backing, $"Gemm y += x·Wᵀ, {dtype} weight [{outFeatures}, {inFeatures}], x {x}", tolerance, tolerance);
    }

    // ------------------------------------------------------------------ column sums

    public void SumRows(int batch, int rows, int cols, bool sumBatches, float beta)
    {
        var x = Input(batch, rows, cols);
        var y = Input(sumBatches ? 1 : batch, 1, cols);
        gpu.SumRows(y.Gpu, x.Gpu, beta);
        cpu.SumRows(y.Cpu, x.Cpu, beta);
        // Sums of many float32 terms: the CPU adds row after row in float32, so its rounding grows with the row count.
        int terms = rows * (sumBatches ? batch : 1);
        AssertSame(y.Backing, $"SumRows beta {beta}: y {y}, x {x}", 1e-5 + 5e-7 * terms, 1e-4);
    }

    public enum Alias { None, Dy, X }

    public void ModulateBackward(int batch, int rows, int cols, Alias alias)
    {
        var dy = Input(batch, rows, cols);
        var x = alias == Alias.X ? dy with { Backing = Backing(dy.Backing.Host.Length) } : Input(batch, rows, cols);
        var vectors = Input(1, batch, 2 * cols);
        var scale = vectors.Columns(cols, cols);
        var scaleBroadcast = new Pair(scale.Backing, scale.Offset, batch, rows, cols, scale.RowStride, 0);
        var dx = alias switch { Alias.Dy => dy, Alias.X => x, _ => Input(batch, rows, cols) };
        var gradients = Input(1, batch, 2 * cols, sliceable: true);
        var dShift = gradients.Columns(0, cols);
        var dScale = gradients.Columns(cols, cols);
        gpu.ModulateBackward(dx.Gpu, dShift.Gpu, dScale.Gpu, dy.Gpu, x.Gpu, scaleBroadcast.Gpu);
        cpu.ModulateBackward(dx.Cpu, dShift.Cpu, dScale.Cpu, dy.Cpu, x.Cpu, scaleBroadcast.Cpu);
        string what = $"ModulateBackward [{batch}, {rows}, {cols}] dx aliasing {alias}";
        AssertSame(dx.Backing, what + ": dx");
        AssertSame(gradients.Backing, what + ": dShift, dScale", 1e-5 + 5e-7 * rows, 1e-4);
    }

    public void GatedResidualBackward(int batch, int rows, int cols, Alias alias)
    {
        var dy = Input(batch, rows, cols);
        var x = alias == Alias.X ? dy with { Backing = Backing(dy.Backing.Host.Length) } : Input(batch, rows, cols);
        var vectors = Input(1, batch, cols);
        var gate = new Pair(vectors.Backing, vectors.Offset, batch, rows, cols, vectors.RowStride, 0);
        var dx = alias switch { Alias.Dy => dy, Alias.X => x, _ => Input(batch, rows, cols) };
        var dGate = Input(1, batch, cols);
        gpu.GatedResidualBackward(dx.Gpu, dGate.Gpu, dy.Gpu, x.Gpu, gate.Gpu);
        cpu.GatedResidualBackward(dx.Cpu, dGate.Cpu, dy.Cpu, x.Cpu, gate.Cpu);
        string what = $"GatedResidualBackward [{batch}, {rows}, {cols}] dx aliasing {alias}";
        AssertSame(dx.Backing, what + ": dx");
        AssertSame(dGate.Backing, what + ": dGate", 1e-5 + 5e-7 * rows, 1e-4);
    }

    // ------------------------------------------------------------------ row ops

    public void LayerNormBackward(int batch, int rows, int cols, float offset, bool aliasDy)
    {
        var x = Input(batch, rows, cols, scale: 2f, offset: offset);
        var dy = Input(batch, rows, cols);
        var dx = aliasDy ? dy : Input(batch, rows, cols);
        gpu.LayerNormBackward(dx.Gpu, dy.Gpu, x.Gpu, 1e-6f);
        cpu.LayerNormBackward(dx.Cpu, dy.Cpu, x.Cpu, 1e-6f);
        AssertSame(dx.Backing, $"LayerNormBackward [{batch}, {rows}, {cols}] x offset {offset}, dx aliasing dy {aliasDy}", 1e-4, 1e-4);
    }

    public void RmsNormBackward(int batch, int rows, int groupSize, int groups, bool aliasDy)
    {
        int cols = groupSize * groups;
        var x = Input(batch, rows, cols, scale: 2f);
        var dy = Input(batch, rows, cols);
        var dx = aliasDy ? dy : Input(batch, rows, cols);
        var scaleValues = Enumerable.Range(0, groupSize).Select(_ => (float)(random.NextDouble() + 0.5)).ToArray();
        using var gpuScale = gpu.Upload(new HostTensor([groupSize], (float[])scaleValues.Clone()));
        using var cpuScale = cpu.Upload(new HostTensor([groupSize], (float[])scaleValues.Clone()));
        gpu.RmsNormBackward(dx.Gpu, dy.Gpu, x.Gpu, gpuScale, groupSize, 1e-6f);
        cpu.RmsNormBackward(dx.Cpu, dy.Cpu, x.Cpu, cpuScale, groupSize, 1e-6f);
        AssertSame(dx.Backing, $"RmsNormBackward [{batch}, {rows}, {groups}×{groupSize}] dx aliasing dy {aliasDy}", 1e-4, 1e-4);
    }

    public void ActivationBackwards(int batch, int rows, int cols)
    {
        var x = Input(batch, rows, cols, scale: 6f);
        foreach (bool alias in new[] { false, true })
        {
            var dy = Input(batch, rows, cols);
            var dx = alias ? dy : Input(batch, rows, cols);
            gpu.SiluBackward(dx.Gpu, dy.Gpu, x.Gpu);
            cpu.SiluBackward(dx.Cpu, dy.Cpu, x.Cpu);
            AssertSame(dx.Backing, $"SiluBackward [{batch}, {rows}, {cols}] dx aliasing dy {alias}");
            dy = Input(batch, rows, cols);
            dx = alias ? dy : Input(batch, rows, cols);
            gpu.GeluTanhBackward(dx.Gpu, dy.Gpu, x.Gpu);
            cpu.GeluTanhBackward(dx.Cpu, dy.Cpu, x.Cpu);
            AssertSame(dx.Backing, $"GeluTanhBackward [{batch}, {rows}, {cols}] dx aliasing dy {alias}");
        }
    }

    public void ApplyRopeBackward(int batch, int rows, int heads, int headDim, bool aliasDy)
    {
        int cols = heads * headDim;
        // Rotation matrices from random angles, as RopeEmbed writes them.
        var pe = Input(batch, rows, 2 * headDim);
        var host = pe.Backing.Host;
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < headDim / 2; p++)
                {
                    double angle = random.NextDouble() * 20 - 10;
                    long at = pe.Offset + b * pe.BatchStride + r * pe.RowStride + 4 * p;
                    host[at] = (float)Math.Cos(angle);
                    host[at + 1] = (float)-Math.Sin(angle);
                    host[at + 2] = (float)Math.Sin(angle);
                    host[at + 3] = (float)Math.Cos(angle);
                }
        var rotations = Upload(host);
        pe = pe with { Backing = rotations };
        var dy = Input(batch, rows, cols);
        var dx = aliasDy ? dy : Input(batch, rows, cols);
        gpu.ApplyRopeBackward(dx.Gpu, dy.Gpu, pe.Gpu, headDim);
        cpu.ApplyRopeBackward(dx.Cpu, dy.Cpu, pe.Cpu, headDim);
        AssertSame(dx.Backing, $"ApplyRopeBackward [{batch}, {rows}, {heads}×{headDim}] dx aliasing dy {aliasDy}");
    }

    // ------------------------------------------------------------------ attention

    /// <summary>
    /// Self-attention (q, k, v column slices of one fused qkv, gradients into one fused dqkv) when the lengths are
    /// equal, otherwise separate q and a fused kv; dOut a row range of a taller tensor.
    /// </summary>
    public void AttentionBackward(int batch, int heads, int headDim, int queryRows, int keyRows, float spread = 1f, double tolerance = 1e-4)
    {
        int width = heads * headDim;
        float scale = 1f / MathF.Sqrt(headDim);
        Pair q, k, v, dq, dk, dv;
        Twin[] gradients;
        if (queryRows == keyRows)
        {
            var qkv = Input(batch, queryRows, 3 * width, scale: spread, dense: true);
            var dqkv = Input(batch, queryRows, 3 * width, dense: true);
            (q, k, v) = (qkv.Columns(0, width), qkv.Columns(width, width), qkv.Columns(2 * width, width));
            (dq, dk, dv) = (dqkv.Columns(0, width), dqkv.Columns(width, width), dqkv.Columns(2 * width, width));
            gradients = [dqkv.Backing];
        }
        else
        {
            q = Input(batch, queryRows, width, scale: spread);
            var kv = Input(batch, keyRows, 2 * width, scale: spread, dense: true);
            (k, v) = (kv.Columns(0, width), kv.Columns(width, width));
            dq = Input(batch, queryRows, width);
            var dkv = Input(batch, keyRows, 2 * width, sliceable: true);
            (dk, dv) = (dkv.Columns(0, width), dkv.Columns(width, width));
            gradients = [dq.Backing, dkv.Backing];
        }
        var dOut = Input(batch, queryRows, width);
        gpu.AttentionBackward(dq.Gpu, dk.Gpu, dv.Gpu, dOut.Gpu, q.Gpu, k.Gpu, v.Gpu, heads, scale);
        cpu.AttentionBackward(dq.Cpu, dk.Cpu, dv.Cpu, dOut.Cpu, q.Cpu, k.Cpu, v.Cpu, heads, scale);
        foreach (var twin in gradients)
            AssertSame(twin, $"AttentionBackward batch {batch}, {heads} heads × {headDim}, {queryRows} queries, {keyRows} keys, spread {spread}",
                tolerance, tolerance);
    }

    // ------------------------------------------------------------------ optimizer and reductions

    public void AdamWSteps(int length)
    {
        var param = Input(1, 1, length);
        var moments = new[] { Input(1, 1, length), Input(1, 1, length) };
        foreach (var moment in moments)
        {
            gpu.Zero(moment.Gpu);
            cpu.Zero(moment.Cpu);
        }
        for (int step = 1; step <= 3; step++)
        {
            var grad = Input(1, 1, length, scale: step);
            // beta1 0.9 lerps from the start, 0.3 from the end: both of torch's lerp forms.
            float beta1 = step == 2 ? 0.3f : 0.9f;
            gpu.AdamWStep(param.Backing.Gpu, grad.Backing.Gpu, moments[0].Backing.Gpu, moments[1].Backing.Gpu, step, 1e-2f, beta1, 0.999f, 1e-8f, 0.01f);
            cpu.AdamWStep(param.Backing.Cpu, grad.Backing.Cpu, moments[0].Backing.Cpu, moments[1].Backing.Cpu, step, 1e-2f, beta1, 0.999f, 1e-8f, 0.01f);
            AssertSame(param.Backing, $"AdamW step {step}, {length} elements: param", 1e-6, 1e-5);
            AssertSame(moments[0].Backing, $"AdamW step {step}: exp_avg", 1e-6, 1e-5);
            AssertSame(moments[1].Backing, $"AdamW step {step}: exp_avg_sq", 1e-6, 1e-5);
        }
    }

    public void ReductionsAndScaling(int batch, int rows, int cols)
    {
        var x = Input(batch, rows, cols, scale: 3f);
        double expected = cpu.SumOfSquares(x.Cpu);
        double actual = gpu.SumOfSquares(x.Gpu);
        Assert.True(Math.Abs(expected - actual) <= 1e-9 * expected + 1e-12,
            $"{gpu.Name}: SumOfSquares {x}: {actual:R}, CPU {expected:R}");
        var dense = Input(batch, rows, cols, dense: true, scale: 1e20f);
        Assert.True(Math.Abs(cpu.SumOfSquares(dense.Cpu) - gpu.SumOfSquares(dense.Gpu)) <= 1e-9 * cpu.SumOfSquares(dense.Cpu),
            $"{gpu.Name}: SumOfSquares of floats near 1e20 (squares beyond float range) {dense}");
        // Several views at once (a step's gradients): one sum, the views' sums added in order.
        double together = gpu.SumOfSquares(x.Gpu, dense.Gpu, x.Gpu.RowRange(0, 0));
        double apart = gpu.SumOfSquares(x.Gpu) + gpu.SumOfSquares(dense.Gpu);
        Assert.True(together == apart, $"{gpu.Name}: SumOfSquares of three views {together:R}, one by one {apart:R}");

        gpu.Scale(x.Gpu, -0.37f);
        cpu.Scale(x.Cpu, -0.37f);
        AssertSame(x.Backing, $"Scale {x}", 0, 0);
        gpu.Zero(x.Gpu);
        cpu.Zero(x.Cpu);
        AssertSame(x.Backing, $"Zero {x}", 0, 0);
    }

    public void NonFiniteValuesPropagateAndZeroClearsThem()
    {
        foreach (float special in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            var x = Input(2, 3, 5);
            x.Backing.Host[x.Offset + x.BatchStride + 2 * x.RowStride + 4] = special;
            var withSpecial = Upload(x.Backing.Host);
            x = x with { Backing = withSpecial };
            double sum = gpu.SumOfSquares(x.Gpu);
            Assert.True(float.IsNaN(special) ? double.IsNaN(sum) : double.IsPositiveInfinity(sum),
                $"{gpu.Name}: SumOfSquares with {special} gave {sum}");
            gpu.Zero(x.Gpu);
            cpu.Zero(x.Cpu);
            AssertSame(withSpecial, $"Zero over {special}", 0, 0);
            Assert.Equal(0.0, gpu.SumOfSquares(x.Gpu));
        }
        // A dense view (cleared by a memset on the GPU backend) inside a NaN tensor: only the view is cleared.
        var nans = Upload(Enumerable.Repeat(float.NaN, 40).ToArray());
        var inner = new Pair(nans, 3, 2, 3, 5, 15, 5);
        gpu.Zero(inner.Gpu);
        cpu.Zero(inner.Cpu);
        AssertSame(nans, "Zero of a dense view over NaN", 0, 0);
    }

    public void Dispose()
    {
        foreach (var tensor in owned) tensor.Dispose();
        cpu.Dispose();
    }
}
