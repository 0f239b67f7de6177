using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Quantization;
using Shouldly;
using static InFluxEdit.Tests.Gpu.QuantizedOpChecks;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Weights held quantized on the ILGPU backend, here its CPU simulator (see <see cref="QuantizedOpChecks"/>): sizes are
/// tiny (the simulator runs every thread as an OS thread) but odd: 5 rows, rows of two blocks, fp8 rows of 45 values.
/// </summary>
public sealed class SimulatorQuantizedTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    private const int OutFeatures = 5;

    public static TheoryData<TensorFormat> EveryFormat() => new(Formats);

    private static int InFeatures(TensorFormat format) => format.IsBlockQuantized() ? 2 * format.BlockElements() : 45;

    private IlgpuBackend Backend => fixture.Backend;

    private QuantizedOpChecks Checks => new(fixture.Backend);

    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void TheDeviceDequantizesEveryFormatBitForBitAsTheDecoder(TensorFormat format) =>
        Checks.Dequantization(format, OutFeatures, InFeatures(format));

    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void LinearWithAQuantizedWeightEqualsLinearWithItsDecodedWeight(TensorFormat format) =>
        Checks.Linear(format, OutFeatures, InFeatures(format), 1, 6);

    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void BackwardProductsWithAQuantizedWeightEqualThoseWithItsDecodedWeight(TensorFormat format) =>
        Checks.BackwardProducts(format, OutFeatures, InFeatures(format), rows: 3);

    [Fact]
    public void TheBlocksStayOnTheDeviceAndTheScratchGoesBackToThePool()
    {
        Backend.HoldsQuantizedWeights.ShouldBeTrue();
        var (quantized, decoded) = Upload(TensorFormat.Q4_K, seed: 7);
        quantized.StoredBytes.ShouldBe(TensorFormat.Q4_K.ByteCount(quantized.Shape)!.Value);
        using var x = Backend.Upload(RandomHost(new Random(8), 1, 2, quantized.Shape[1]));
        using var y = Backend.Allocate([1, 2, OutFeatures]);
        Backend.Linear(y, x, quantized, null);
        long held = Backend.AllocatedBytes;
        Backend.Linear(y, x, quantized, null);
        Backend.AllocatedBytes.ShouldBe(held, "the second call reuses the first call's pooled scratch");
        Backend.ReleaseCachedMemory();
        Backend.AllocatedBytes.ShouldBeLessThan(held, "nothing but the parked scratch was freed: no tensor kept it");
        quantized.Dispose();
        decoded.Dispose();
    }

    [Fact]
    public void OpsThatCannotReadQuantizedBlocksSaySo()
    {
        var (quantized, decoded) = Upload(TensorFormat.Q8_0, seed: 9);
        var random = new Random(10);
        using var y = Backend.Allocate([OutFeatures, 64]);
        Should.Throw<ArgumentException>(() => Backend.Copy(y, quantized)).Message.ShouldContain("held quantized");
        using var rows = Backend.Upload(RandomHost(random, 3, 64));
        Should.Throw<ArgumentException>(() => Backend.RmsNorm(rows, rows, quantized, 64, 1e-6f)).Message.ShouldContain("held quantized");
        using var dy = Backend.Upload(RandomHost(random, 3, OutFeatures));
        using var slice = Backend.Allocate([3, 32]);
        Should.Throw<ArgumentException>(() => Backend.Gemm(slice, dy, false, quantized.AsView().Columns(0, 32), false, 1f, 0f))
            .Message.ShouldContain("as a whole");
        using var dyTransposed = Backend.Upload(RandomHost(random, OutFeatures, 3));
        using var dx = Backend.Allocate([3, 64]);
        Should.Throw<ArgumentException>(() => Backend.Gemm(dx, dyTransposed, true, quantized, false, 1f, 0f)).Message.ShouldContain("as a whole");
        using var product = Backend.Allocate([OutFeatures, 3]);
        Should.Throw<ArgumentException>(() => Backend.Gemm(product, quantized, false, rows, true, 1f, 0f)).Message.ShouldContain("held quantized");
        Should.Throw<ArgumentException>(() => Backend.UploadQuantizedWeight([4, 32], new QuantizedBlocks(TensorFormat.Q4_K, new byte[144], 1f, 256)))
            .Message.ShouldContain("whole 256-value blocks");
        quantized.Dispose();
        decoded.Dispose();
        using var output = Backend.Allocate([3, OutFeatures]);
        Should.Throw<ObjectDisposedException>(() => Backend.Linear(output, rows, quantized, null));
    }

    /// <summary>
    /// ILGPU writes float products as mul.f32, which the driver's compiler may fuse with the following add into an FMA
    /// (one rounding, not the decoder's two): the kernels' products must be mul.rn.f32, which it may not fuse. ILGPU
    /// keeps each product's host branch (a plain mul.f32) as dead code behind a constant-true test, so every product
    /// shows up once as each; the only other mul.f32 is a float16 subnormal's exact scaling by 2^-24 (0f33800000).
    /// </summary>
    [Fact]
    public void TheCudaKernelsRoundEveryProductOnItsOwn()
    {
        using var context = Context.Create(builder => builder.EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var backend = new PTXBackend(context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_88, nvvmAPI: null!);
        foreach (var entry in GpuKernelCatalog.All.Where(e => e.Family == "dequantize"))
        {
            string ptx = ((PTXCompiledKernel)backend.Compile(EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method), default)).PTXAssembly;
            string[] lines = ptx.Split('\n');
            int rounded = lines.Count(line => line.Contains("mul.rn.f32"));
            int plain = lines.Count(line => line.Contains("mul.f32") && !line.Contains("0f33800000"));
            rounded.ShouldBeGreaterThan(0, entry.Method.Name);
            rounded.ShouldBe(plain, $"{entry.Method.Name}: every product needs its mul.rn.f32");
            ptx.ShouldNotContain("fma.", customMessage: entry.Method.Name);
        }
    }

    private (DeviceTensor Quantized, DeviceTensor Decoded) Upload(TensorFormat format, int seed) =>
        Checks.Upload(format, OutFeatures, InFeatures(format), seed);
}
