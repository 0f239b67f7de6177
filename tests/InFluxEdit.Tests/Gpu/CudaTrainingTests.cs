using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;
using Xunit.Abstractions;
using static InFluxEdit.Tests.Gpu.TrainingOpChecks;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The training ops on CUDA against the CPU backend (skipped where there is no CUDA device): products on cuBLAS
/// (sgemm, strided-batched, GemmEx under bf16 precision) and on the ILGPU GEMM kernel, the attention backward in one
/// and in several chunks at the model's head dim, and the LoRA-gradient golden case through the whole tiny model.
/// Run them with: dotnet test --filter "FullyQualifiedName~CudaTrainingTests".
/// </summary>
public sealed class CudaTrainingTests(ITestOutputHelper output)
{
    private static void EveryProduct(TrainingOpChecks checks, double tolerance)
    {
        foreach (var (m, n, k) in new[] { (1, 1, 1), (37, 129, 200), (300, 64, 17), (5, 3072, 64) })
            foreach (bool transposeA in new[] { false, true })
                foreach (bool transposeB in new[] { false, true })
                {
                    checks.Gemm(2, m, n, k, transposeA, transposeB, Batching.Same, tolerance: tolerance);
                    checks.Gemm(1, m, n, k, transposeA, transposeB, Batching.Same, alpha: 1f, beta: 0f, dense: true, tolerance: tolerance);
                }
        foreach (var batching in Enum.GetValues<Batching>())
            foreach (bool dense in new[] { false, true })
                foreach (var (transposeA, transposeB) in new[] { (false, false), (true, false), (false, true), (true, true) })
                    checks.Gemm(3, 65, 40, 300, transposeA, transposeB, batching, alpha: 1f, beta: 1f, dense: dense, tolerance: tolerance);
        checks.GemmSpecialScalars();
    }

    [CudaFact]
    public void EveryTrainingOpMatchesTheCpuOnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        output.WriteLine(backend.Description);
        Assert.True(backend.UsesCuBlas, "these checks expect cuBLAS on the GPU machine");
        using var checks = new TrainingOpChecks(backend);
        EveryProduct(checks, 1e-4);
        checks.GemmWithSixteenBitWeight(DType.BF16, 2, 300, 3072, 129);
        checks.GemmWithSixteenBitWeight(DType.F16, 1, 17, 64, 200);
        checks.SumRows(1, 4096, 3072, sumBatches: true, beta: 1f);
        checks.SumRows(3, 70, 129, sumBatches: false, beta: 0f);
        foreach (var alias in Enum.GetValues<Alias>())
        {
            checks.ModulateBackward(2, 1100, 307, alias);
            checks.GatedResidualBackward(2, 1100, 307, alias);
        }
        checks.ModulateBackward(1, 4096, 3072, Alias.Dy);
        checks.LayerNormBackward(2, 33, 3072, 100f, aliasDy: true);
        checks.LayerNormBackward(1, 5, 7, 0f, aliasDy: false);
        checks.RmsNormBackward(2, 300, 128, 3, aliasDy: true);
        checks.ActivationBackwards(3, 50, 1001);
        checks.ApplyRopeBackward(2, 300, 3, 128, aliasDy: true);
        checks.AdamWSteps(100_003);
        checks.ReductionsAndScaling(3, 1000, 3071);
        checks.NonFiniteValuesPropagateAndZeroClearsThem();
    }

    [CudaFact]
    public void AttentionBackwardOnCuBlasMatchesTheCpuAtTheModelsHeadDim()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        Assert.True(backend.UsesCuBlas, "these checks expect cuBLAS on the GPU machine");
        using var checks = new TrainingOpChecks(backend);
        checks.AttentionBackward(1, 3, 128, 300, 300, 1f);
        Assert.Equal("cublas×1", backend.LastAttentionBackwardPath);
        checks.AttentionBackward(2, 2, 128, 1100, 257, 2f);
        Assert.Equal("cublas×2", backend.LastAttentionBackwardPath);
        checks.AttentionBackward(1, 2, 64, 7, 1, 1f);
        checks.AttentionBackward(2, 2, 64, 0, 9, 1f);
        // ~40 query rows per chunk: 1100 rows in 28 chunks, the last one partial.
        backend.AttentionScratchBudgetBytes = 2L * 40 * 3 * 1100 * sizeof(float);
        checks.AttentionBackward(1, 3, 128, 1100, 1100, 2f);
        Assert.Equal("cublas×28", backend.LastAttentionBackwardPath);
        backend.AttentionScratchBudgetBytes = 1;
        checks.AttentionBackward(2, 2, 128, 5, 300, 1f);
        Assert.Equal("cublas×10", backend.LastAttentionBackwardPath);
    }

    [CudaFact]
    public void IlgpuGemmKernelAndAttentionBackwardMatchTheCpuOnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        backend.TrainingGemmOnCuBlasEnabled = false;
        using var checks = new TrainingOpChecks(backend);
        EveryProduct(checks, 1e-4);
        checks.GemmWithSixteenBitWeight(DType.BF16, 2, 37, 200, 129);
        checks.AttentionBackward(2, 3, 128, 300, 257, 1f);
        Assert.Equal("ilgpu×2", backend.LastAttentionBackwardPath);
    }

    [CudaFact]
    public void BFloat16PrecisionKeepsProductsWithinBFloat16Error()
    {
        using var backend = IlgpuBackend.CreateCuda(precision: GpuPrecision.BFloat16, log: output.WriteLine);
        output.WriteLine(backend.Description);
        using var checks = new TrainingOpChecks(backend);
        // GemmEx on bf16-rounded activations against the CPU's float32: K = 256 unit-scale terms keep ~1e-2.
        checks.GemmWithSixteenBitWeight(DType.BF16, 2, 37, 256, 96, tolerance: 3e-2);
        // Float32 products on TF32 tensor cores (11 significant bits).
        checks.Gemm(2, 37, 96, 256, true, false, Batching.SumIntoOne, tolerance: 2e-2);
        backend.AttentionKernel = AttentionKernelChoice.CuBlas; // the TF32 products; FlashAttentionTests checks flash
        checks.AttentionBackward(1, 2, 128, 300, 300, 1f, tolerance: 1e-2);
    }

    [CudaFact]
    public void LoraGradientGoldenCasePassesOnCuda()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = IlgpuBackend.CreateCuda(log: output.WriteLine);
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find("flux-tiny-lora-grad")!, outDir: null);
        foreach (var row in rows) output.WriteLine($"{row.Tensor}: {row.Error:E2} (tolerance {row.Tolerance:E0}) {row.Status} {row.Note}");
        Assert.NotEmpty(rows);
        Assert.DoesNotContain(rows, r => r.Status != ParityStatus.Passed);
    }
}
