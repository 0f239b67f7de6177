using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The simulator with warps of 32 (the mma fragment layout needs them) and one warp per group: every simulated
/// thread is an OS thread, so groups stay small.
/// </summary>
public sealed class FlashSimulatorFixture : IDisposable
{
    // bf16 precision: Allocate still gives float32 tensors, AllocateActivation bf16 ones, so both storages are tested.
    public IlgpuBackend Backend { get; } = IlgpuBackend.CreateCpuSimulator(
        new CPUDevice(numThreadsPerWarp: TensorCoreMma.WarpLanes, numWarpsPerMultiprocessor: 1, numMultiprocessors: 1), GpuPrecision.BFloat16);

    public FlashSimulatorFixture() => Backend.AttentionKernel = AttentionKernelChoice.Flash;

    public void Dispose() => Backend.Dispose();
}

public sealed class FlashAttentionTests(FlashSimulatorFixture fixture) : IClassFixture<FlashSimulatorFixture>
{
    // Tiles: 16 query rows per group on the simulator, 64 keys per tile; lengths straddle both.
    [Theory]
    [InlineData(1, 1, 16, 5, 7, false, false)]
    [InlineData(1, 2, 32, 20, 70, false, false)]
    [InlineData(1, 2, 16, 33, 33, true, true)]
    [InlineData(2, 1, 48, 17, 9, true, false)]
    [InlineData(1, 1, 32, 70, 70, false, true)]
    public void ForwardMatchesFloat64OfTheSameBf16Inputs(int batch, int heads, int headDim, int queryRows, int keyRows, bool bias, bool causal) =>
        new FlashAttentionChecks(fixture.Backend).Forward(batch, heads, headDim, queryRows, keyRows, bias, causal);

    // Backward: groups of 16 keys on the simulator, query tiles of 32.
    [Theory]
    [InlineData(1, 1, 16, 5, 7)]
    [InlineData(2, 2, 32, 37, 21)]
    [InlineData(1, 1, 48, 33, 33)]
    public void BackwardMatchesFloat64OfTheSameBf16Inputs(int batch, int heads, int headDim, int queryRows, int keyRows) =>
        new FlashAttentionChecks(fixture.Backend).Backward(batch, heads, headDim, queryRows, keyRows);

    /// <summary>
    /// On bf16 activations (what a bf16 forward stores) the kernel reads the words as they are: its output is the output
    /// on float32 views of the same values, rounded to bf16, bit for bit.
    /// </summary>
    [Fact]
    public void OnBf16ActivationsFlashGivesTheFloat32ViewsOutputRounded()
    {
        var backend = fixture.Backend;
        var random = new Random(31);
        int[] qkvShape = [2, 19, 3 * 32], outShape = [2, 19, 32];
        var values = Enumerable.Range(0, 2 * 19 * 96).Select(_ => (float)FlashAttentionChecks.Bf16(random.NextDouble() * 3 - 1.5)).ToArray();
        using var wide = backend.Upload(new HostTensor(qkvShape, values));
        using var narrow = backend.AllocateActivation(qkvShape);
        backend.Copy(narrow.AsView(), wide.AsView());
        Assert.Equal(DType.BF16, narrow.DType);
        using var wideOut = backend.Allocate(outShape);
        using var narrowOut = backend.AllocateActivation(outShape);
        foreach (var (qkv, o) in new[] { (wide, wideOut), (narrow, narrowOut) })
        {
            View all = qkv.AsView();
            backend.Attention(o.AsView(), all.Columns(0, 32), all.Columns(32, 32), all.Columns(64, 32), 2, 0.25f);
            Assert.Equal("flash", backend.LastAttentionPath);
        }
        float[] expected = backend.Download(wideOut, outShape).Data.Select(x => (float)FlashAttentionChecks.Bf16(x)).ToArray();
        Assert.Equal(expected, backend.Download(narrowOut, outShape).Data);
    }

    [Fact]
    public void FlashRefusesHeadDimsItCannotTile()
    {
        using var t = fixture.Backend.Allocate([1, 3, 24]);
        var error = Assert.Throws<ArgumentException>(() => fixture.Backend.Attention(t.AsView(), t.AsView(), t.AsView(), t.AsView(), 1, 1f));
        Assert.Contains("--attention flash", error.Message);
        Assert.Contains("24", error.Message);
    }

    [Fact]
    public void AutoKeepsTheFloat32PathOffCudaAndFlashNeedsWarpsOf32()
    {
        using var backend = IlgpuBackend.CreateCpuSimulator();
        Assert.Equal(AttentionKernelChoice.Auto, backend.AttentionKernel);
        var checks = new GpuOpChecks(backend);
        checks.Attention(1, 2, 16, 5, 7, 1f);
        Assert.Equal("ilgpu", backend.LastAttentionPath);
        var error = Assert.Throws<ArgumentException>(() => backend.AttentionKernel = AttentionKernelChoice.Flash);
        Assert.Contains("warps of 32", error.Message);
    }

    [Fact]
    public void AttentionOptionParses()
    {
        Assert.Equal(AttentionKernelChoice.Flash, BackendFactory.ParseAttention("flash"));
        Assert.Equal(AttentionKernelChoice.CuBlas, BackendFactory.ParseAttention("cuBLAS"));
        Assert.Equal(AttentionKernelChoice.Tiled, BackendFactory.ParseAttention("tiled"));
        Assert.Equal(AttentionKernelChoice.Auto, BackendFactory.ParseAttention("auto"));
        Assert.Contains("--attention", Assert.Throws<ArgumentException>(() => BackendFactory.ParseAttention("fast")).Message);
    }

    // ------------------------------------------------------------------ the mma emulation

    /// <summary>
    /// One warp places a 16×16 A, a 16×8 B and a 16×8 C in its lanes' registers as the PTX ISA lays out
    /// mma.m16n8k16 (written out here, independently of the kernels), multiplies with <see cref="TensorCoreMma"/>
    /// and writes each lane's D back by the same layout.
    /// </summary>
    private static void MmaKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> d)
    {
        var exchange = SharedMemory.Allocate<uint>(TensorCoreMma.ExchangeWords);
        int lane = ILGPU.Group.IdxX, g = lane / 4, t = lane % 4;
        uint a0 = BFloat16Pair.Pack(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]);
        uint a1 = BFloat16Pair.Pack(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]);
        uint a2 = BFloat16Pair.Pack(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]);
        uint a3 = BFloat16Pair.Pack(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9]);
        uint b0 = BFloat16Pair.Pack(b[2 * t * 8 + g], b[(2 * t + 1) * 8 + g]);
        uint b1 = BFloat16Pair.Pack(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
        float d0 = c[g * 8 + 2 * t], d1 = c[g * 8 + 2 * t + 1], d2 = c[(g + 8) * 8 + 2 * t], d3 = c[(g + 8) * 8 + 2 * t + 1];
        TensorCoreMma.MultiplyAccumulate(ref d0, ref d1, ref d2, ref d3, a0, a1, a2, a3, b0, b1, exchange);
        d[g * 8 + 2 * t] = d0;
        d[g * 8 + 2 * t + 1] = d1;
        d[(g + 8) * 8 + 2 * t] = d2;
        d[(g + 8) * 8 + 2 * t + 1] = d3;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void EmulatedMmaEqualsTheFloat32ProductOfTheBf16Fragments(int seed)
    {
        var random = new Random(seed);
        float Bf16() => (float)FlashAttentionChecks.Bf16((random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-3, 4)));
        float[] a = new float[16 * 16], b = new float[16 * 8], c = new float[16 * 8];
        for (int i = 0; i < a.Length; i++) a[i] = Bf16();
        for (int i = 0; i < b.Length; i++) b[i] = Bf16();
        for (int i = 0; i < c.Length; i++) c[i] = (float)(random.NextDouble() * 2 - 1);

        using var context = Context.Create(builder => builder.CPU(new CPUDevice(TensorCoreMma.WarpLanes, 1, 1)));
        using var accelerator = context.CreateCPUAccelerator(0);
        using var aBuffer = accelerator.Allocate1D(a);
        using var bBuffer = accelerator.Allocate1D(b);
        using var cBuffer = accelerator.Allocate1D(c);
        using var dBuffer = accelerator.Allocate1D<float>(16 * 8);
        var kernel = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(MmaKernel);
        kernel(new KernelConfig(1, TensorCoreMma.WarpLanes), aBuffer.View, bBuffer.View, cBuffer.View, dBuffer.View);
        accelerator.Synchronize();
        float[] actual = dBuffer.GetAsArray1D();

        var expected = new float[16 * 8];
        for (int row = 0; row < 16; row++)
            for (int col = 0; col < 8; col++)
            {
                float sum = c[row * 8 + col];
                for (int k = 0; k < 16; k++) sum += a[row * 16 + k] * b[k * 8 + col];
                expected[row * 8 + col] = sum;
            }
        Assert.Equal(expected, actual);
    }

    // ------------------------------------------------------------------ GPU

    [CudaFact]
    public void FlashMatchesFloat64AndCuBlasOnTheGpu()
    {
        using var backend = IlgpuBackend.CreateCuda(0, GpuPrecision.BFloat16);
        Assert.Equal(AttentionKernelChoice.Auto, backend.AttentionKernel);
        var checks = new FlashAttentionChecks(backend);
        // Auto picks flash at FLUX's head size in bf16.
        checks.Forward(1, 4, 128, 300, 300, bias: false, causal: false);
        checks.Forward(2, 3, 64, 77, 77, bias: true, causal: true);
        checks.Backward(1, 4, 128, 300, 300);
        checks.Backward(2, 2, 64, 70, 130);

        // The same inputs on the cuBLAS path (TF32 products of the unrounded inputs): the two agree to bf16's
        // input rounding, a few parts in a thousand of the values.
        var views = new GpuOpChecks(backend, seed: 7);
        var (qkv, backing) = views.StridedInput(1, 256, 3 * 512);
        using var flashOut = backend.Allocate([1, 256, 512]);
        using var cublasOut = backend.Allocate([1, 256, 512]);
        View q = qkv.Columns(0, 512), k = qkv.Columns(512, 512), v = qkv.Columns(1024, 512);
        backend.Attention(flashOut.AsView(), q, k, v, 4, 1f / MathF.Sqrt(128));
        Assert.Equal("flash", backend.LastAttentionPath);
        backend.AttentionKernel = AttentionKernelChoice.CuBlas;
        backend.Attention(cublasOut.AsView(), q, k, v, 4, 1f / MathF.Sqrt(128));
        Assert.StartsWith("cublas", backend.LastAttentionPath);
        float[] flash = views.ReadBack(flashOut.AsView()), reference = views.ReadBack(cublasOut.AsView());
        for (int i = 0; i < flash.Length; i++)
            Assert.True(Math.Abs(flash[i] - reference[i]) <= 1.0 / 32, $"element {i}: flash {flash[i]}, cuBLAS {reference[i]}");
        backing.Device.Dispose();
    }
}
