using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;
using static InFluxEdit.Tests.Gpu.TrainingOpChecks;

namespace InFluxEdit.Tests.Gpu;

/// <summary>The training ops on the ILGPU simulator against the CPU backend (see <see cref="TrainingOpChecks"/>).</summary>
public sealed class SimulatorTrainingOpTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    public static TheoryData<int, int, int, bool, bool> GemmShapes()
    {
        var data = new TheoryData<int, int, int, bool, bool>();
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 17, 33), (17, 1, 3), (33, 20, 17), (70, 9, 40) })
            foreach (bool transposeA in new[] { false, true })
                foreach (bool transposeB in new[] { false, true })
                    data.Add(m, n, k, transposeA, transposeB);
        return data;
    }

    [Theory]
    [MemberData(nameof(GemmShapes))]
    public void GemmMatchesTheCpuOnStridedViews(int m, int n, int k, bool transposeA, bool transposeB)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.Gemm(2, m, n, k, transposeA, transposeB, Batching.Same);
        checks.Gemm(1, m, n, k, transposeA, transposeB, Batching.Same, alpha: 1f, beta: 0f);
    }

    [Theory]
    [InlineData(Batching.SharedB, false, false, false)]
    [InlineData(Batching.SharedB, false, true, true)]   // dx = dy·W stacked as one product of Batch·M rows
    [InlineData(Batching.SharedB, true, false, false)]
    [InlineData(Batching.SharedA, false, true, false)]
    [InlineData(Batching.BroadcastB, false, true, false)]
    [InlineData(Batching.BroadcastB, false, false, true)]
    [InlineData(Batching.SumIntoOne, true, false, false)] // dW += Σ dyᵀ·x, per batch with beta then 1
    [InlineData(Batching.SumIntoOne, true, false, true)]  // the same as one product over the stacked rows
    [InlineData(Batching.SumIntoOne, false, true, false)]
    [InlineData(Batching.SumIntoOne, true, true, true)]
    public void GemmBatchRules(Batching batching, bool transposeA, bool transposeB, bool dense)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.Gemm(3, 17, 13, 9, transposeA, transposeB, batching, dense: dense);
        checks.Gemm(3, 5, 33, 20, transposeA, transposeB, batching, alpha: 1f, beta: 1f, dense: dense);
    }

    [Fact]
    public void GemmBetaZeroAlphaZeroAndEmptyK()
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.GemmSpecialScalars();
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void GemmWithSixteenBitWeights(DType dtype)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.GemmWithSixteenBitWeight(dtype, 2, 7, 33, 19);
    }

    [Fact]
    public void GemmRejectsOverlapAndMismatchedShapes()
    {
        var backend = fixture.Backend;
        using var a = backend.Allocate([1, 4, 6]);
        using var b = backend.Allocate([1, 6, 5]);
        using var c = backend.Allocate([1, 4, 5]);
        Assert.Throws<ArgumentException>(() => backend.Gemm(c, a, false, b, true, 1f, 0f));
        Assert.Throws<ArgumentException>(() => backend.Gemm(a.AsView().Columns(0, 5), a, false, b, false, 1f, 0f));
        using var two = backend.Allocate([2, 4, 6]);
        Assert.Throws<ArgumentException>(() => backend.Gemm(c.AsView() with { Batch = 2, BatchStride = 0 }, two, false, b, false, 1f, 0f));
    }

    [Theory]
    [InlineData(1, 1, 1, false, 0f)]
    [InlineData(2, 5, 33, false, 0.5f)]
    [InlineData(3, 70, 9, true, 1f)]  // a bias gradient: every batch's rows into one row
    [InlineData(2, 0, 4, true, 0.5f)] // no rows: y = beta·y
    public void SumRowsMatchesTheCpu(int batch, int rows, int cols, bool sumBatches, float beta)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.SumRows(batch, rows, cols, sumBatches, beta);
    }

    [Theory]
    [InlineData(1, 1, 1, Alias.None)]
    [InlineData(2, 5, 33, Alias.None)]
    [InlineData(2, 37, 17, Alias.Dy)]
    [InlineData(3, 9, 20, Alias.X)]
    public void ModulationAndGateBackwardsMatchTheCpu(int batch, int rows, int cols, Alias alias)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.ModulateBackward(batch, rows, cols, alias);
        checks.GatedResidualBackward(batch, rows, cols, alias);
    }

    [Theory]
    [InlineData(1, 1, 1, 0f, false)]
    [InlineData(2, 3, 33, 0f, true)]
    [InlineData(1, 2, 300, 50f, false)] // more columns than threads; |mean| ≫ std
    public void LayerNormBackwardMatchesTheCpu(int batch, int rows, int cols, float offset, bool aliasDy)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.LayerNormBackward(batch, rows, cols, offset, aliasDy);
    }

    [Theory]
    [InlineData(1, 1, 3, 1, false)]
    [InlineData(2, 3, 32, 3, true)]
    [InlineData(1, 3, 40, 2, false)]
    public void RmsNormBackwardMatchesTheCpu(int batch, int rows, int groupSize, int groups, bool aliasDy)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.RmsNormBackward(batch, rows, groupSize, groups, aliasDy);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(2, 5, 33)]
    public void ActivationBackwardsMatchTheCpu(int batch, int rows, int cols)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.ActivationBackwards(batch, rows, cols);
    }

    [Theory]
    [InlineData(1, 3, 1, 2, false)]
    [InlineData(2, 5, 3, 6, true)]
    public void ApplyRopeBackwardMatchesTheCpu(int batch, int rows, int heads, int headDim, bool aliasDy)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.ApplyRopeBackward(batch, rows, heads, headDim, aliasDy);
    }

    [Theory]
    [InlineData(1, 1, 4, 1, 1, 1f)]
    [InlineData(2, 2, 8, 17, 17, 1f)]  // fused qkv and dqkv
    [InlineData(1, 3, 5, 9, 33, 4f)]   // more keys than queries, large logits
    [InlineData(2, 1, 16, 33, 3, 1f)]  // more queries than keys
    [InlineData(1, 2, 4, 17, 1, 1f)]   // one key: constant softmax, dq = 0
    public void AttentionBackwardMatchesTheCpu(int batch, int heads, int headDim, int queryRows, int keyRows, float spread)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.AttentionBackward(batch, heads, headDim, queryRows, keyRows, spread);
        Assert.Equal($"ilgpu×{batch}", fixture.Backend.LastAttentionBackwardPath);
    }

    [Fact]
    public void AttentionBackwardInChunksOfQueryRows()
    {
        var backend = fixture.Backend;
        long budget = backend.AttentionScratchBudgetBytes;
        try
        {
            // Two score buffers of 2 heads × 7 rows × 20 keys: 33 rows in 5 chunks, the last one partial.
            backend.AttentionScratchBudgetBytes = 2L * 2 * 7 * 20 * sizeof(float);
            using var checks = new TrainingOpChecks(backend);
            checks.AttentionBackward(2, 2, 8, 33, 20);
            Assert.Equal("ilgpu×10", backend.LastAttentionBackwardPath);
            backend.AttentionScratchBudgetBytes = 1; // one query row per chunk
            checks.AttentionBackward(1, 2, 4, 5, 5);
            Assert.Equal("ilgpu×5", backend.LastAttentionBackwardPath);
        }
        finally
        {
            backend.AttentionScratchBudgetBytes = budget;
        }
    }

    [Fact]
    public void AttentionBackwardWithoutQueriesClearsKeyAndValueGradients()
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.AttentionBackward(2, 2, 4, 0, 5);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(1000)]
    public void AdamWMatchesTheCpu(int length)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.AdamWSteps(length);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 37, 41)]
    public void SumOfSquaresScaleAndZeroMatchTheCpu(int batch, int rows, int cols)
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.ReductionsAndScaling(batch, rows, cols);
    }

    [Fact]
    public void SumOfSquaresPropagatesNonFiniteValuesAndZeroClearsThem()
    {
        using var checks = new TrainingOpChecks(fixture.Backend);
        checks.NonFiniteValuesPropagateAndZeroClearsThem();
    }
}

/// <summary>
/// The whole tiny FLUX model's generated ForwardBackward on the simulator: the LoRA-gradient golden case (loss, every
/// adapter's and img_in's gradient, two AdamW steps) against the reference, as the CPU backend passes it.
/// </summary>
public sealed class SimulatorLoraGradientTests
{
    [Fact]
    public void LoraGradientGoldenCasePassesOnTheSimulator()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = IlgpuBackend.CreateCpuSimulator();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find("flux-tiny-lora-grad")!, outDir: null);
        Assert.NotEmpty(rows);
        Assert.DoesNotContain(rows, r => r.Status == ParityStatus.Skipped);
        var failures = rows.Where(r => r.Status != ParityStatus.Passed).Select(r => $"{r.Tensor}: {r.Error:E2} > {r.Tolerance:E0} {r.Note}").ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }
}
