using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// bf16 activations on CUDA in bf16 precision, where the products are cuBLAS's (the simulator has none): GemmEx reads
/// bf16 views in place and writes bf16 (no conversion pass), attention multiplies bf16 q, k, v and probabilities.
/// References are float64 over the bf16-rounded inputs; the bound allows the output's bf16 rounding (2⁻⁹ relative)
/// twice where a second pass (the bias) rounds again, and the probabilities' rounding in attention.
/// </summary>
public sealed class CudaBFloat16ActivationTests(ITestOutputHelper output)
{
    private readonly Random random = new(99);

    [CudaFact]
    public void LinearOnBFloat16ViewsWritesBFloat16ThroughGemmEx()
    {
        using var backend = IlgpuBackend.CreateCuda(precision: GpuPrecision.BFloat16, log: output.WriteLine);
        Assert.True(backend.UsesCuBlas, "this check is about the cuBLAS path: " + backend.Description);
        foreach (var (weightType, bias) in new[] { (DType.BF16, true), (DType.BF16, false), (DType.F32, true) })
            CheckLinear(backend, batch: 2, rows: 37, inFeatures: 200, outFeatures: 129, weightType, bias);
    }

    [CudaFact]
    public void AttentionOnBFloat16ViewsRunsBFloat16Products()
    {
        using var backend = IlgpuBackend.CreateCuda(precision: GpuPrecision.BFloat16, log: output.WriteLine);
        Assert.True(backend.UsesCuBlas, "this check is about the cuBLAS path: " + backend.Description);
        int batch = 2, heads = 3, headDim = 64, queryRows = 70, keyRows = 90, width = heads * headDim;
        var (qkv, qHost) = Narrow(backend, batch, queryRows, 3 * width, 2f);
        var (kv, kHost) = Narrow(backend, batch, keyRows, 3 * width, 2f);
        using var o = backend.AllocateActivation([batch, queryRows, width]);
        var q = qkv.Columns(0, width);
        var k = kv.Columns(width, width);
        var v = kv.Columns(2 * width, width);
        float scale = 1f / MathF.Sqrt(headDim);
        backend.Attention(o.AsView(), q, k, v, heads, scale);
        Assert.StartsWith("cublas", backend.LastAttentionPath);

        var expected = AttentionReference.Compute(batch, heads, headDim, queryRows, keyRows, scale,
            (b, r, c) => GpuOpChecks.At(q, qHost, b, r, c), (b, r, c) => GpuOpChecks.At(k, kHost, b, r, c),
            (b, r, c) => GpuOpChecks.At(v, kHost, b, r, c));
        backend.Synchronize();
        GpuOpChecks.AssertClose(expected, backend.Download(o.AsView(), [batch, queryRows, width]).Data, 2e-2, 1e-2,
            "bf16 attention on cuBLAS");
        qkv.Tensor.Dispose();
        kv.Tensor.Dispose();
    }

    [CudaFact]
    public void TinyModelForwardsInBFloat16OnCudaAreWithinTheBFloat16Bar()
    {
        using var backend = IlgpuBackend.CreateCuda(precision: GpuPrecision.BFloat16, log: output.WriteLine);
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        var runner = new ParityRunner(manifest, backend) { ToleranceFloor = ParityRunner.BFloat16Tolerance };
        foreach (var caseName in new[] { "flux-tiny-forward", "flux-tiny-bf16-forward", "vae-tiny-case", "clip-tiny-case", "t5-tiny-case" })
        {
            var rows = runner.Run(manifest.Find(caseName)!, outDir: null);
            foreach (var row in rows)
                output.WriteLine($"{caseName} {row.Tensor}: {row.Error:E2}");
            Assert.NotEmpty(rows);
            Assert.All(rows, r => Assert.True(r.Status == ParityStatus.Passed, $"{caseName} {r.Tensor}: {r.Error:E2} {r.Note}"));
        }
    }

    private void CheckLinear(IlgpuBackend backend, int batch, int rows, int inFeatures, int outFeatures, DType weightType, bool withBias)
    {
        var (x, xHost) = Narrow(backend, batch, rows, inFeatures, 1f);
        var weights = new float[outFeatures * inFeatures];
        for (int i = 0; i < weights.Length; i++)
            weights[i] = GpuOpChecks.BFloat16Round((float)(random.NextDouble() * 2 - 1) / MathF.Sqrt(inFeatures));
        byte[] raw = weightType == DType.BF16
            ? GpuOpChecks.BFloat16Bytes(weights)
            : System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights.AsSpan()).ToArray();
        using var w = backend.UploadWeight([outFeatures, inFeatures], weightType, raw);
        var biasValues = new float[outFeatures];
        for (int i = 0; i < outFeatures; i++) biasValues[i] = i * 0.25f - 1f;
        using var bias = backend.UploadWeight([outFeatures], DType.F32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(biasValues.AsSpan()));

        // A column slice of a wider bf16 activation, as q/k/v slices of a fused projection are.
        using var wide = backend.AllocateActivation([batch, rows, outFeatures + 4]);
        Assert.Equal(DType.BF16, wide.DType);
        var y = wide.AsView().Columns(2, outFeatures);
        backend.Linear(y, x, w, withBias ? bias : null);
        backend.Synchronize();
        var actual = backend.Download(y, [batch, rows, outFeatures]).Data;
        int i2 = 0;
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int n = 0; n < outFeatures; n++, i2++)
                {
                    double product = 0, magnitude = 0;
                    for (int k = 0; k < inFeatures; k++)
                    {
                        double term = GpuOpChecks.At(x, xHost, b, r, k) * weights[n * inFeatures + k];
                        product += term;
                        magnitude += Math.Abs(term);
                    }
                    double bias0 = withBias ? biasValues[n] : 0, expected = product + bias0;
                    // bf16 output rounding of the product and of the sum, plus float32 accumulation.
                    double bound = Math.Pow(2, -8) * (Math.Abs(product) + Math.Abs(expected)) + 1e-6 * magnitude;
                    Assert.True(Math.Abs(actual[i2] - expected) <= bound,
                        $"Linear {weightType} bias {withBias}: element {i2} is {actual[i2]}, expected {expected} (bound {bound:E2})");
                }
        x.Tensor.Dispose();
    }

    /// <summary>A strided [batch, rows, cols] bf16 activation view (row and batch gaps) and its values as a flat host array.</summary>
    private (View View, float[] Host) Narrow(IlgpuBackend backend, int batch, int rows, int cols, float scale)
    {
        long rowStride = cols + 3, batchStride = rows * rowStride + 5, start = 7;
        var host = new float[start + batch * batchStride];
        for (int i = 0; i < host.Length; i++)
            host[i] = GpuOpChecks.BFloat16Round(scale * (float)(random.NextDouble() * 2 - 1));
        using var wide = backend.Upload(new HostTensor([host.Length], host));
        var narrow = backend.AllocateActivation([host.Length]);
        backend.Copy(narrow.AsView(), wide.AsView());
        return (new View(narrow, start, batch, rows, cols, batchStride, rowStride), host);
    }
}
