using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Gpu;
using Shouldly;

namespace InFluxEdit.Tests.Text;

/// <summary>The text encoders' ops on the CPU backend, against float64 references.</summary>
public sealed class CpuTextOpTests
{
    [Theory]
    [InlineData(1, 1, 5, 3, DType.F32)]
    [InlineData(2, 7, 11, 33, DType.F32)]
    [InlineData(3, 4, 9, 17, DType.BF16)]
    public void EmbeddingAndPositionsMatch(int batch, int tokens, int vocab, int dim, DType tableType)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).EmbeddingAndPositions(batch, tokens, vocab, dim, tableType);
    }

    [Theory]
    [InlineData(4f)]
    [InlineData(-1f)]
    [InlineData(1.5f)]
    [InlineData(float.NaN)]
    public void EmbeddingRefusesIdsOutsideTheTable(float badId)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).EmbeddingRefusesBadIds(badId);
    }

    [Theory]
    [InlineData(1, 1, 1, true)]
    [InlineData(2, 3, 48, true)]
    [InlineData(1, 5, 70, false)]
    public void AffineLayerNormQuickGeluAndMultiplyMatch(int batch, int rows, int cols, bool bias)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).AffineLayerNormQuickGeluAndMultiply(batch, rows, cols, bias);
    }

    [Theory]
    [InlineData(4, 12, 12)]
    [InlineData(3, 160, 160)] // distances past max_distance 128
    [InlineData(2, 5, 300)]
    public void RelativePositionBiasMatches(int heads, int queries, int keys)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).RelativePositionBias(heads, queries, keys, 32, 128);
    }

    [Theory]
    [InlineData(1, 1, 4, 1, 1, false, true)]
    [InlineData(2, 2, 24, 77, 77, false, true)] // CLIP: causal, 1/sqrt(d)
    [InlineData(2, 4, 8, 30, 30, true, false)] // T5: bias, scale 1
    [InlineData(1, 3, 16, 200, 200, true, true)] // several query blocks
    [InlineData(2, 2, 8, 5, 9, true, true)] // more keys than queries
    public void MaskedAttentionMatchesNaiveSoftmax(int batch, int heads, int headDim, int queries, int keys, bool bias, bool causal)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).MaskedAttention(batch, heads, headDim, queries, keys, bias, causal);
    }

    [Theory]
    [InlineData(1, 1, 3)]
    [InlineData(3, 77, 20)]
    public void GatherArgmaxRowsTakesTheFirstLargestId(int batch, int tokens, int cols)
    {
        using var backend = new CpuBackend();
        new TextOpChecks(backend).GatherArgmaxRows(batch, tokens, cols);
    }
}

/// <summary>The same checks on the ILGPU kernels (CPU simulator), covering the flash attention kernel's bias and mask.</summary>
public sealed class SimulatorTextOpTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    private TextOpChecks Checks => new(fixture.Backend);

    [Theory]
    [InlineData(2, 7, 11, 33, DType.F32)]
    [InlineData(3, 4, 9, 17, DType.BF16)] // a bf16 table stays 16-bit and is widened per element
    public void EmbeddingAndPositionsMatch(int batch, int tokens, int vocab, int dim, DType tableType) =>
        Checks.EmbeddingAndPositions(batch, tokens, vocab, dim, tableType);

    [Theory]
    [InlineData(4f)]
    [InlineData(1.5f)]
    public void EmbeddingMarksIdsOutsideTheTableAsNaN(float badId) => Checks.EmbeddingMarksBadIdsAsNaN(badId);

    [Theory]
    [InlineData(2, 3, 48, true)]
    [InlineData(1, 2, 70, false)]
    public void AffineLayerNormQuickGeluAndMultiplyMatch(int batch, int rows, int cols, bool bias) =>
        Checks.AffineLayerNormQuickGeluAndMultiply(batch, rows, cols, bias);

    [Theory]
    [InlineData(4, 12, 12)]
    [InlineData(2, 140, 150)]
    public void RelativePositionBiasMatches(int heads, int queries, int keys) =>
        Checks.RelativePositionBias(heads, queries, keys, 32, 128);

    [Theory]
    [InlineData(2, 2, 8, 19, 19, false, true)]
    [InlineData(1, 2, 8, 40, 40, true, false)] // more than one key tile
    [InlineData(1, 2, 4, 35, 35, true, true)]
    public void MaskedAttentionMatchesNaiveSoftmax(int batch, int heads, int headDim, int queries, int keys, bool bias, bool causal) =>
        Checks.MaskedAttention(batch, heads, headDim, queries, keys, bias, causal);

    [Fact]
    public void GatherArgmaxRowsTakesTheFirstLargestId() => Checks.GatherArgmaxRows(3, 12, 20);
}

/// <summary>The same checks on CUDA (skipped without a GPU): attention through cuBLAS with the score mask kernel, and the ILGPU kernel.</summary>
public sealed class CudaTextOpTests
{
    [CudaFact]
    public void TextOpsMatchFloat64OnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda();
        var checks = new TextOpChecks(backend);
        checks.EmbeddingAndPositions(2, 77, 500, 768, DType.F32);
        checks.EmbeddingAndPositions(2, 33, 500, 256, DType.BF16);
        checks.EmbeddingMarksBadIdsAsNaN(7f);
        checks.AffineLayerNormQuickGeluAndMultiply(2, 77, 768, true);
        checks.RelativePositionBias(64, 300, 300, 32, 128);
        checks.MaskedAttention(2, 12, 64, 77, 77, false, true);
        checks.MaskedAttention(2, 8, 64, 200, 200, true, false);
        checks.MaskedAttention(1, 4, 32, 50, 70, true, true);
        backend.AttentionOnCuBlasEnabled = false;
        checks.MaskedAttention(2, 8, 64, 150, 150, true, true);
        checks.GatherArgmaxRows(4, 77, 768);
    }
}

/// <summary>T5 bucketing: the runtime's float32 table against the float64 formula written in the test.</summary>
public sealed class RelativePositionBucketTests
{
    [Theory]
    [InlineData(32, 128)]
    [InlineData(32, 64)]
    [InlineData(16, 40)]
    public void EveryDistanceFallsInTheFormulasBucket(int buckets, int maxDistance)
    {
        int[] table = RelativePositionBuckets.Compute(400, 400, buckets, maxDistance, bidirectional: true);
        for (int relative = -399; relative <= 399; relative++)
            table[relative + 399].ShouldBe(RelativeBucketReference.Bidirectional(relative, buckets, maxDistance), $"relative position {relative}");
    }

    [Fact]
    public void DistancesPastMaxDistanceShareTheLastBucketOfTheirSide()
    {
        foreach (int distance in new[] { 128, 129, 160, 500 })
        {
            RelativePositionBuckets.Of(distance, 32, 128, true).ShouldBe(31);
            RelativePositionBuckets.Of(-distance, 32, 128, true).ShouldBe(15);
        }
        // 127 is still inside the logarithmic range: 8 + ⌊ln(127/8)/ln(16)·8⌋ = 15 on the key side too.
        RelativePositionBuckets.Of(-127, 32, 128, true).ShouldBe(15);
        RelativePositionBuckets.Of(0, 32, 128, true).ShouldBe(0);
        RelativePositionBuckets.Of(1, 32, 128, true).ShouldBe(17);
    }
}

/// <summary>The tiny golden encoders end to end on the ILGPU simulator (the CPU backend runs them in ForwardParityTests).</summary>
public sealed class SimulatorTextEncoderParityTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData("clip-tiny-case", new[] { "last_hidden_state", "pooled" })]
    [InlineData("t5-tiny-case", new[] { "last_hidden_state_12", "last_hidden_state_160" })]
    public void GoldenCaseMatchesOnTheKernels(string caseName, string[] tensors)
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        var rows = new ParityRunner(manifest, fixture.Backend).Run(manifest.Find(caseName)!, outDir: null);
        rows.Select(r => r.Tensor).ShouldBe(tensors, ignoreOrder: true);
        rows.Where(r => r.Status != ParityStatus.Passed).Select(r => $"{r.Tensor}: {r.Error:E2} {r.Note}").ShouldBeEmpty();
    }
}
