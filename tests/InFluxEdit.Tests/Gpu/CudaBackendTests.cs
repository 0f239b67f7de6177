using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The CUDA backend. Without a GPU these check only that probing is safe and creation fails clearly; on a GPU
/// machine the same float64-referenced op checks as the simulator's run on CUDA, Linear through cuBLAS when found.
/// Without a device the GPU checks are reported as skipped.
/// </summary>
public sealed class CudaBackendTests(ITestOutputHelper output)
{
    [Fact]
    public void ProbingNeverThrowsAndCreationFailsClearlyWithoutADevice()
    {
        bool available = IlgpuBackend.IsCudaAvailable();
        Assert.Equal(available, IlgpuBackend.IsCudaAvailable());
        output.WriteLine($"CUDA available: {available} ({IlgpuBackend.CudaAvailability})");
        if (available)
            return;
        var error = Assert.Throws<InvalidOperationException>(() => IlgpuBackend.CreateCuda());
        Assert.StartsWith("no CUDA device found", error.Message);
    }

    [CudaFact]
    public void EveryOpMatchesFloat64OnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        output.WriteLine(backend.Description);
        Assert.Equal("cuda", backend.Name);
        var checks = new GpuOpChecks(backend);
        checks.ElementwiseOps(3, 5, 33);
        checks.LayerNorm(2, 3, 3072, 100f);
        checks.RmsNorm(2, 3, 128, 3, bf16MatrixScale: true);
        checks.TimestepEmbedding([0f, 0.5f, 0.99358f, 1f, 30f], half: 128);
        checks.RopeEmbedAndApply(2, 9, [16, 56, 56], heads: 2);
        foreach (var type in new[] { DType.F32, DType.BF16, DType.F16 })
            checks.Linear(2, 37, 200, 129, type, withBias: true);
        checks.Linear(2, 3, 64, 40, DType.F32, withBias: true, broadcastRows: true);
        checks.Attention(1, 2, 128, 300, 257, 1f);
        checks.Attention(2, 3, 32, 70, 70, 4f);
        Assert.StartsWith("cublas", backend.LastAttentionPath);
    }

    [CudaFact]
    public void AttentionOnCuBlasMatchesFloat64AtTheModelsHeadDim()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        Assert.True(backend.UsesCuBlas, "these checks need cuBLAS on the GPU machine");
        var checks = new GpuOpChecks(backend);
        checks.Attention(1, 2, 128, 300, 300, 1f);
        Assert.Equal("cublas×1", backend.LastAttentionPath);
        checks.Attention(1, 3, 128, 1100, 1100, 2f);
        Assert.Equal("cublas×1", backend.LastAttentionPath);
        checks.Attention(2, 2, 128, 300, 257, 1f);
        Assert.Equal("cublas×2", backend.LastAttentionPath); // one chunk per batch

        // A budget of ~40 query rows: 1100 rows in 28 chunks, the last one partial.
        backend.AttentionScratchBudgetBytes = 40L * 3 * 1100 * sizeof(float);
        checks.Attention(1, 3, 128, 1100, 1100, 2f);
        Assert.Equal("cublas×28", backend.LastAttentionPath);
        // Smaller than one query row: chunks of one row.
        backend.AttentionScratchBudgetBytes = 1;
        checks.Attention(2, 2, 128, 5, 300, 1f);
        Assert.Equal("cublas×10", backend.LastAttentionPath);
    }

    [CudaFact]
    public void AttentionKernelStillMatchesFloat64OnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        backend.AttentionOnCuBlasEnabled = false;
        var checks = new GpuOpChecks(backend);
        checks.Attention(1, 2, 128, 300, 257, 1f);
        checks.Attention(2, 3, 32, 70, 70, 4f);
        Assert.Equal("ilgpu", backend.LastAttentionPath);
    }

    [CudaFact]
    public void BFloat16PrecisionRunsGemmExWithinBFloat16Error()
    {
        using var backend = IlgpuBackend.CreateCuda(precision: GpuPrecision.BFloat16, log: output.WriteLine);
        output.WriteLine(backend.Description);
        // Activations rounded to bf16 (8 significant bits): a K = 256 dot product of unit-scale terms keeps
        // about 1e-2 absolute accuracy.
        new GpuOpChecks(backend).Linear(2, 37, 256, 96, DType.BF16, withBias: true, tolerance: 3e-2);
        // Float32 weights go through sgemm, which this precision lets round to TF32 (11 significant bits).
        new GpuOpChecks(backend).Linear(2, 37, 256, 96, DType.F32, withBias: true, tolerance: 5e-3);
        // Attention on TF32 tensor cores: scores of O(1) carry ~1e-3 absolute error, the output less after averaging.
        // (auto would take the flash kernel in bf16: FlashAttentionTests checks that one.)
        backend.AttentionKernel = AttentionKernelChoice.CuBlas;
        new GpuOpChecks(backend).Attention(1, 2, 128, 300, 300, 1f, absolute: 3e-3, relative: 3e-3);
        new GpuOpChecks(backend).Attention(1, 3, 128, 1100, 1100, 2f, absolute: 3e-3, relative: 3e-3);
        Assert.Equal("cublas×1", backend.LastAttentionPath);
    }
}
