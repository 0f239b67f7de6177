using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Quantization;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Weights held quantized on CUDA (skipped where there is no GPU; see <see cref="QuantizedOpChecks"/>): the dequantization
/// kernels after the driver's compiler (which would fuse a plain multiply and add into an FMA and change the values) give
/// the decoder's values bit for bit, and Linear and the backward products on cuBLAS equal those over the reference weight,
/// under both precisions, at sizes with several GEMM tiles. Run them with:
/// dotnet test --filter "FullyQualifiedName~CudaQuantizedTests".
/// </summary>
public sealed class CudaQuantizedTests(ITestOutputHelper output)
{
    [CudaFact]
    public void QuantizedWeightsOnCuBlasComputeWhatTheirDecodedWeightsCompute()
    {
        foreach (var precision in new[] { GpuPrecision.Float32, GpuPrecision.BFloat16 })
        {
            using var backend = IlgpuBackend.CreateCuda(precision: precision, log: output.WriteLine);
            Assert.True(backend.UsesCuBlas, "these checks expect cuBLAS on the GPU machine");
            var checks = new QuantizedOpChecks(backend);
            foreach (var format in QuantizedOpChecks.Formats)
            {
                int inFeatures = format.IsBlockQuantized() ? 3 * TensorFormats.SuperBlock : 777;
                if (precision == GpuPrecision.Float32)
                    checks.Dequantization(format, 129, inFeatures);
                checks.Linear(format, 300, inFeatures, 1, 77);
                checks.BackwardProducts(format, 300, inFeatures, rows: 65);
            }
        }
    }
}
