using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// One simulator backend (so one ILGPU Context) per kernel family: a kernel that fails to compile poisons its
/// Context, and separate contexts keep one broken family from failing the others' tests.
/// </summary>
public sealed class SimulatorBackendFixture : IDisposable
{
    public IlgpuBackend Backend { get; } = IlgpuBackend.CreateCpuSimulator();
    public void Dispose() => Backend.Dispose();
}

public sealed class GpuElementwiseTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(2, 3, 17)]
    [InlineData(3, 5, 33)]
    public void ElementwiseOpsMatchFloat64(int batch, int rows, int cols) =>
        new GpuOpChecks(fixture.Backend).ElementwiseOps(batch, rows, cols);
}

public sealed class GpuRowNormTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(1, 1, 1, 0f)]
    [InlineData(2, 3, 33, 0f)]
    [InlineData(1, 2, 300, 100f)] // more columns than threads; |mean| ≫ std
    public void LayerNormMatchesFloat64(int batch, int rows, int cols, float offset) =>
        new GpuOpChecks(fixture.Backend).LayerNorm(batch, rows, cols, offset);

    [Theory]
    [InlineData(1, 1, 3, 1, false)]
    [InlineData(2, 3, 32, 3, false)]
    [InlineData(1, 2, 17, 2, true)] // a bf16 [1, 17] scale stays 16-bit and is widened on use
    [InlineData(1, 3, 40, 2, false)] // more group columns than threads
    public void RmsNormMatchesFloat64(int batch, int rows, int groupSize, int groupsPerRow, bool bf16Scale) =>
        new GpuOpChecks(fixture.Backend).RmsNorm(batch, rows, groupSize, groupsPerRow, bf16Scale);
}

public sealed class GpuEmbeddingTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Fact]
    public void TimestepEmbeddingMatchesFloat64ForGuidanceSizedAngles() =>
        new GpuOpChecks(fixture.Backend).TimestepEmbedding([0f, 0.5f, 0.99358f, 1f, 30f], half: 128);

    [Fact]
    public void TimestepEmbeddingOddHalf() =>
        new GpuOpChecks(fixture.Backend).TimestepEmbedding([0.25f], half: 3);

    [Theory]
    [InlineData(1, 3, new[] { 4, 6, 6 }, 1)]
    [InlineData(2, 5, new[] { 2, 4 }, 3)]
    public void RopeEmbedAndApplyMatchFloat64(int batch, int tokens, int[] axesDim, int heads) =>
        new GpuOpChecks(fixture.Backend).RopeEmbedAndApply(batch, tokens, axesDim, heads);
}

public sealed class GpuLinearTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(1, 1, 1, 1, DType.F32, true)]
    [InlineData(2, 17, 33, 19, DType.F32, true)]
    [InlineData(1, 3, 40, 17, DType.F32, false)] // K spans three 16-wide tiles, the last one partial
    [InlineData(2, 5, 33, 17, DType.BF16, true)]
    [InlineData(1, 17, 20, 3, DType.F16, false)]
    public void LinearMatchesFloat64(int batch, int rows, int inFeatures, int outFeatures, DType weightType, bool bias) =>
        new GpuOpChecks(fixture.Backend).Linear(batch, rows, inFeatures, outFeatures, weightType, bias);

    [Fact]
    public void LinearOverBroadcastRows() =>
        new GpuOpChecks(fixture.Backend).Linear(2, 3, 9, 5, DType.BF16, withBias: true, broadcastRows: true);

    [Fact]
    public void SixteenBitMatricesStayNarrowAndVectorsAreWidened()
    {
        var backend = fixture.Backend;
        using var matrix = backend.UploadWeight([2, 2], DType.BF16, new byte[8]);
        using var vector = backend.UploadWeight([4], DType.BF16, new byte[8]);
        using var doubles = backend.UploadWeight([1], DType.F64, BitConverter.GetBytes(2.5));
        Assert.Equal(DType.BF16, matrix.DType);
        Assert.Equal(DType.F32, vector.DType);
        Assert.Equal(DType.F32, doubles.DType);
        Assert.Equal(2.5f, backend.Download(doubles.AsView(), [1]).Data[0]);
    }
}

public sealed class GpuAttentionTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(2, 2, 32, 70, 70, 1f)]
    [InlineData(1, 1, 32, 1, 33, 6f)]   // large logits: the online softmax must rescale, not overflow
    [InlineData(1, 1, 128, 17, 45, 1f)] // the model's head dim; keys ≠ queries
    [InlineData(1, 1, 128, 70, 3, 1f)]
    [InlineData(1, 3, 5, 3, 1, 1f)]     // one key: softmax is 1
    public void AttentionMatchesFloat64(int batch, int heads, int headDim, int queryRows, int keyRows, float spread) =>
        new GpuOpChecks(fixture.Backend).Attention(batch, heads, headDim, queryRows, keyRows, spread);

    [Fact]
    public void HeadDimAbove128IsRejected()
    {
        var backend = fixture.Backend;
        using var t = backend.Allocate([1, 2, 130]);
        Assert.Throws<ArgumentException>(() => backend.Attention(t.AsView(), t.AsView(), t.AsView(), t.AsView(), 1, 1f));
    }
}

/// <summary>The row softmax of the cuBLAS attention path, on the simulator against float64.</summary>
public sealed class GpuSoftmaxTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(3, 1, 1f, 0f)]       // one column: probability 1
    [InlineData(2, 7, 1f, 0f)]       // fewer columns than threads: idle threads must not poison the reduction
    [InlineData(4, 300, 4f, 0f)]     // more columns than threads
    [InlineData(2, 300, 400f, 0f)]   // scores far beyond exp's float range: max subtraction, online rescaling
    [InlineData(2, 33, 1f, 1e4f)]    // large common offset
    [InlineData(1, 4608, 30f, 0f)]   // FLUX's key count
    public void SoftmaxRowsMatchesFloat64(int rows, int cols, float spread, float offset)
    {
        var backend = fixture.Backend;
        var random = new Random(rows * 1000 + cols);
        var host = new float[rows * cols + 5];
        for (int i = 0; i < host.Length; i++)
            host[i] = offset + spread * (float)(random.NextDouble() * 2 - 1);
        // Rising scores in the last row: each thread's maximum grows on every element it reads.
        for (int c = 0; c < cols; c++)
            host[2 + (rows - 1) * cols + c] = offset + spread * c / cols;
        using var tensor = backend.Upload(new HostTensor([host.Length], host));
        var view = new View(tensor, 2, 1, rows, cols, (long)rows * cols, cols);
        backend.SoftmaxRowsInPlace(view);
        backend.Synchronize();
        var all = backend.Download(tensor.AsView(), [host.Length]).Data;

        var expected = new double[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity, total = 0;
            for (int c = 0; c < cols; c++) max = Math.Max(max, host[2 + r * cols + c]);
            for (int c = 0; c < cols; c++) total += Math.Exp(host[2 + r * cols + c] - max);
            for (int c = 0; c < cols; c++) expected[r * cols + c] = Math.Exp(host[2 + r * cols + c] - max) / total;
        }
        GpuOpChecks.AssertClose(expected, all.Skip(2).Take(rows * cols).ToArray(), 1e-7, 1e-5,
            $"softmax [{rows}, {cols}] spread {spread} offset {offset}");
        // Elements outside the view are untouched.
        Assert.Equal(host[..2], all[..2]);
        Assert.Equal(host[^3..], all[^3..]);
    }
}

public sealed class GpuMemoryTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Fact]
    public void UploadDownloadRoundTripsAndDownloadsStridedViews()
    {
        var backend = fixture.Backend;
        var data = Enumerable.Range(0, 2 * 3 * 5).Select(i => (float)i).ToArray();
        using var tensor = backend.Upload(new HostTensor([2, 3, 5], data));
        Assert.Equal(data, backend.Download(tensor.AsView(), [30]).Data);

        var columns = tensor.AsView().Columns(1, 2);
        var expected = new List<float>();
        for (int b = 0; b < 2; b++) for (int r = 0; r < 3; r++) for (int c = 1; c < 3; c++) expected.Add(b * 15 + r * 5 + c);
        Assert.Equal(expected.ToArray(), backend.Download(columns, [2, 3, 2]).Data);

        var broadcast = new View(tensor, Offset: 5, Batch: 1, Rows: 4, Cols: 5, BatchStride: 0, RowStride: 0);
        Assert.Equal(Enumerable.Repeat(new float[] { 5, 6, 7, 8, 9 }, 4).SelectMany(r => r).ToArray(),
            backend.Download(broadcast, [4, 5]).Data);
        Assert.Throws<ArgumentException>(() => backend.Download(columns, [5]));
    }

    [Fact]
    public void DisposedActivationsAreKeptForReuseUntilTrimmed()
    {
        var backend = fixture.Backend;
        backend.ReleaseCachedMemory();
        backend.Allocate([1000]).Dispose();
        Assert.True(backend.ReleaseCachedMemory() >= 1000 * sizeof(float));
        Assert.Equal(0, backend.ReleaseCachedMemory());
    }

    [Fact]
    public void ViewsOutsideTheirTensorAndForeignTensorsAreRejected()
    {
        var backend = fixture.Backend;
        using var small = backend.Allocate([2, 3]);
        Assert.Throws<ArgumentException>(() => backend.Copy(small.AsView(), small.AsView() with { Offset = 1 }));
        using var other = IlgpuBackend.CreateCpuSimulator();
        using var foreign = other.Allocate([2, 3]);
        Assert.Throws<ArgumentException>(() => backend.Copy(small.AsView(), foreign.AsView()));
    }

    [Fact]
    public void SimulatorDescribesItself()
    {
        Assert.Equal("ilgpu-cpu", fixture.Backend.Name);
        Assert.Contains("ILGPU tiled GEMM", fixture.Backend.Description);
        Assert.False(fixture.Backend.UsesCuBlas);
    }
}
