using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>The image ops' kernels on the ILGPU CPU simulator at tiny sizes (one simulator Context for this family).</summary>
public sealed class GpuImageOpTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    private IlgpuBackend Backend => fixture.Backend;

    [Theory]
    [InlineData(1, 5, 7, 3, 5, 3, 1, 1, true, DType.F32)]   // odd sizes, pad 1
    [InlineData(2, 5, 7, 3, 5, 3, 1, 1, false, DType.BF16)] // bf16 weights stay 16-bit until the repack widens them
    [InlineData(2, 3, 4, 4, 3, 1, 1, 0, true, DType.F32)]   // 1×1: Linear on x directly
    [InlineData(1, 3, 5, 2, 3, 1, 1, 0, false, DType.F16)]
    public void Conv2dMatchesFloat64(int batch, int height, int width, int cin, int cout, int kernel, int stride, int pad,
        bool bias, DType weightType) =>
        new ImageOpChecks(Backend).Conv2d(batch, height, width, cin, cout, kernel, stride, Padding2d.Same(pad), bias, weightType);

    [Fact]
    public void DownsampleConvMatchesFloat64() =>
        new ImageOpChecks(Backend).Conv2d(2, 5, 7, 3, 5, 3, 2, new Padding2d(0, 0, 1, 1), true, DType.BF16);

    [Fact]
    public void ConvInChunksOfPixelsAndOfImages()
    {
        long saved = Backend.ConvScratchFloats;
        try
        {
            // 27 columns per pixel: chunks of 3 pixels (ragged last chunk), then of one whole 4×5 image.
            Backend.ConvScratchFloats = 27 * 3;
            new ImageOpChecks(Backend).Conv2d(2, 4, 5, 3, 4, 3, 1, Padding2d.Same(1), true);
            Backend.ConvScratchFloats = 27 * 20;
            new ImageOpChecks(Backend).Conv2d(3, 4, 5, 3, 4, 3, 1, Padding2d.Same(1), true);
        }
        finally
        {
            Backend.ConvScratchFloats = saved;
        }
    }

    [Theory]
    [InlineData(2, 3, 5, 64, 32, true, 0f, 1 << 16)]   // 32 groups over 64 channels
    [InlineData(1, 3, 3, 8, 8, false, 0f, 1 << 16)]    // groups == channels
    [InlineData(2, 5, 7, 12, 3, true, 50f, 8)]         // |mean| ≫ std; rows split over chunks
    public void GroupNormMatchesFloat64(int batch, int height, int width, int channels, int groups, bool affine, float offset,
        int elementsPerBlock)
    {
        int saved = Backend.GroupNormElementsPerBlock;
        try
        {
            Backend.GroupNormElementsPerBlock = elementsPerBlock;
            var checks = new ImageOpChecks(Backend);
            checks.GroupNorm(batch, height, width, channels, groups, affine, offset);
            checks.GroupNorm(batch, height, width, channels, groups, affine, offset, inPlace: true);
        }
        finally
        {
            Backend.GroupNormElementsPerBlock = saved;
        }
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(2, 3, 5, 7)]
    public void UpsampleNearest2xRepeatsEachPixel(int batch, int height, int width, int channels) =>
        new ImageOpChecks(Backend).UpsampleNearest2x(batch, height, width, channels);

    [Fact]
    public void RejectsUnsupportedViews() => new ImageOpChecks(Backend).RejectsWhatItDoesNotSupport();

    [Fact]
    public void ImageKernelsAreInThePtxCatalog()
    {
        var names = GpuKernelCatalog.All.Select(e => e.Method.Name).ToHashSet();
        foreach (string kernel in new[] { "Im2Col", "RepackConvWeightFloat32", "RepackConvWeightBFloat16",
                     "RepackConvWeightFloat16", "UpsampleNearest2x", "GroupNormFinish", "GroupNormApply", "Partials" })
            Assert.Contains(kernel, names);
    }
}

/// <summary>The same checks on a real GPU (skipped without one), at sizes the simulator cannot reach.</summary>
public sealed class CudaImageOpTests
{
    [CudaFact]
    public void ImageOpsMatchFloat64OnCuda()
    {
        using var backend = IlgpuBackend.CreateCuda();
        var checks = new ImageOpChecks(backend);
        checks.Conv2d(2, 17, 23, 32, 48, 3, 1, Padding2d.Same(1), true);
        checks.Conv2d(1, 17, 23, 32, 48, 3, 1, Padding2d.Same(1), true, DType.BF16);
        checks.Conv2d(1, 16, 16, 3, 8, 3, 2, new Padding2d(0, 0, 1, 1), true);
        checks.Conv2d(2, 9, 9, 64, 32, 1, 1, Padding2d.None, true, DType.BF16);
        checks.GroupNorm(1, 64, 64, 128, 32, true, 0f);
        checks.GroupNorm(2, 33, 31, 64, 32, true, 20f, inPlace: true);
        checks.UpsampleNearest2x(2, 17, 9, 40);
        checks.RejectsWhatItDoesNotSupport();
    }
}
