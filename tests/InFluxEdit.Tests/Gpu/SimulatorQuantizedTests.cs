using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Cpu;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Weights held quantized on the ILGPU backend (here its CPU simulator): the device dequantization gives
/// <see cref="TensorDecoder"/>'s values bit for bit for every format, and Linear and the backward products over the
/// blocks equal the same ops over the decoded weight uploaded as float32, exactly (both run the same GEMM on the same
/// float32 values). Sizes are tiny (the simulator runs every thread as an OS thread) but odd: several rows, rows of
/// two blocks, fp8 rows of 45 values.
/// </summary>
public sealed class SimulatorQuantizedTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    private const int OutFeatures = 5;

    private static readonly TensorFormat[] Formats =
    [
        TensorFormat.F8_E4M3, TensorFormat.F8_E5M2, TensorFormat.Q8_0, TensorFormat.Q4_0, TensorFormat.Q4_1, TensorFormat.Q5_0,
        TensorFormat.Q5_1, TensorFormat.Q2_K, TensorFormat.Q3_K, TensorFormat.Q4_K, TensorFormat.Q5_K, TensorFormat.Q6_K,
    ];

    public static TheoryData<TensorFormat> EveryFormat() => new(Formats);

    private static int InFeatures(TensorFormat format) => format.IsBlockQuantized() ? 2 * format.BlockElements() : 45;

    private IlgpuBackend Backend => fixture.Backend;

    /// <summary>
    /// Every byte random (every code, every float16 scale: subnormal, infinite and NaN ones too), with scale 1 and, for
    /// fp8, the power-of-two scale a scaled fp8 checkpoint carries; the bf16 scratch is each value rounded to nearest even.
    /// </summary>
    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void TheDeviceDequantizesEveryFormatBitForBitAsTheDecoder(TensorFormat format)
    {
        int inFeatures = InFeatures(format);
        var bytes = new byte[format.ByteCount([OutFeatures, inFeatures])!.Value];
        new Random(17 + (int)format).NextBytes(bytes);
        foreach (float scale in format.IsBlockQuantized() ? [1f] : new[] { 1f, 0.0625f })
        {
            var blocks = new QuantizedBlocks(format, bytes, scale, (long)OutFeatures * inFeatures);
            float[] expected = blocks.Decode();
            using var weight = (GpuTensor)Backend.UploadQuantizedWeight([OutFeatures, inFeatures], blocks);
            weight.StoredBytes.ShouldBe(bytes.LongLength);

            using (var decoded = Backend.Dequantize(weight, toBFloat16: false))
            {
                float[] actual = Backend.Download(decoded.AsView(), decoded.Shape).Data;
                for (int i = 0; i < expected.Length; i++)
                    if (!(float.IsNaN(expected[i]) && float.IsNaN(actual[i])))
                        BitConverter.SingleToUInt32Bits(actual[i]).ShouldBe(BitConverter.SingleToUInt32Bits(expected[i]),
                            $"{format} × {scale}, value {i}: {actual[i]} against {expected[i]}");
            }
            using (var decoded = Backend.Dequantize(weight, toBFloat16: true))
            {
                var words = new ushort[expected.Length];
                decoded.Words.CopyToCPU(words);
                for (int i = 0; i < expected.Length; i++)
                    if (!float.IsNaN(expected[i]))
                        words[i].ShouldBe(BFloat16.FromSingle(expected[i]), $"{format} × {scale}, value {i} as bf16");
            }
        }
    }

    /// <summary>Linear over the blocks and over the decoded float32 weight, with a bias, at one row and at several.</summary>
    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void LinearWithAQuantizedWeightEqualsLinearWithItsDecodedWeight(TensorFormat format)
    {
        var (quantized, decoded) = Upload(format, seed: 3);
        var random = new Random(4);
        using var bias = Backend.Upload(RandomHost(random, OutFeatures));
        foreach (int rows in new[] { 1, 6 })
        {
            using var x = Backend.Upload(RandomHost(random, 2, rows, quantized.Shape[1]));
            using var expected = Backend.Allocate([2, rows, OutFeatures]);
            using var actual = Backend.Allocate([2, rows, OutFeatures]);
            Backend.Linear(expected, x, decoded, bias);
            Backend.Linear(actual, x, quantized, bias);
            Read(actual).ShouldBe(Read(expected), $"{format}, {rows} rows");
        }
        quantized.Dispose();
        decoded.Dispose();
    }

    /// <summary>The products of a linear layer's backward: dx = alpha·dy·W + beta·dx and y = alpha·x·Wᵀ + beta·y, over a batch.</summary>
    [Theory]
    [MemberData(nameof(EveryFormat))]
    public void BackwardProductsWithAQuantizedWeightEqualThoseWithItsDecodedWeight(TensorFormat format)
    {
        var (quantized, decoded) = Upload(format, seed: 5);
        int inFeatures = quantized.Shape[1];
        var random = new Random(6);
        foreach (bool transposeB in new[] { false, true })
        {
            var (alpha, beta) = transposeB ? (1f, 0f) : (0.5f, -0.75f);
            int aCols = transposeB ? inFeatures : OutFeatures, cCols = transposeB ? OutFeatures : inFeatures;
            using var a = Backend.Upload(RandomHost(random, 2, 3, aCols));
            var start = RandomHost(random, 2, 3, cCols);
            using var expected = Backend.Upload(start);
            using var actual = Backend.Upload(start);
            Backend.Gemm(expected, a, false, decoded, transposeB, alpha, beta);
            Backend.Gemm(actual, a, false, quantized, transposeB, alpha, beta);
            Read(actual).ShouldBe(Read(expected), $"{format}, transposeB {transposeB}");
        }
        quantized.Dispose();
        decoded.Dispose();
    }

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
        Backend.TrimPool();
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

    private (DeviceTensor Quantized, DeviceTensor Decoded) Upload(TensorFormat format, int seed)
    {
        int inFeatures = InFeatures(format);
        var weight = CpuQuantizedGemmTests.Weight(format, OutFeatures, inFeatures, new Random(seed));
        var quantized = Backend.UploadQuantizedWeight([OutFeatures, inFeatures], weight);
        var decoded = Backend.UploadWeight([OutFeatures, inFeatures], DType.F32, MemoryMarshal.AsBytes(weight.Decode().AsSpan()));
        return (quantized, decoded);
    }

    private static HostTensor RandomHost(Random random, params int[] shape)
    {
        var host = new HostTensor(shape);
        for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return host;
    }

    private float[] Read(DeviceTensor tensor) => Backend.Download(tensor.AsView(), tensor.Shape).Data;
}
