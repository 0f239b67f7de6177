using System.Runtime.Intrinsics.X86;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Gpu;

namespace InFluxEdit.Tests.Cpu;

/// <summary>Conv2d, GroupNorm and UpsampleNearest2x on the CPU backend against float64 references (see <see cref="ImageOpChecks"/>).</summary>
public sealed class CpuImageOpTests : IDisposable
{
    private readonly CpuBackend backend = new();

    public void Dispose() => backend.Dispose();

    [Theory]
    [InlineData(1, 5, 7, 3, 5, 3, 1, 1, true)]    // odd sizes, pad 1
    [InlineData(2, 5, 7, 3, 5, 3, 1, 1, false)]   // batches, no bias
    [InlineData(2, 6, 5, 4, 3, 1, 1, 0, true)]    // 1×1: a Linear
    [InlineData(1, 9, 11, 16, 24, 3, 1, 1, true)] // several GEMM tiles of rows and columns
    [InlineData(1, 40, 33, 20, 40, 3, 1, 1, false)] // more output pixels than one im2col block
    public void Conv2dMatchesFloat64(int batch, int height, int width, int cin, int cout, int kernel, int stride, int pad, bool bias)
    {
        var checks = new ImageOpChecks(backend);
        checks.Conv2d(batch, height, width, cin, cout, kernel, stride, Padding2d.Same(pad), bias);
        checks.Conv2d(batch, height, width, cin, cout, kernel, stride, Padding2d.Same(pad), bias, dense: true);
    }

    [Theory]
    [InlineData(1, 5, 7, 3, 5, true)]
    [InlineData(2, 8, 8, 6, 4, false)]
    [InlineData(1, 7, 6, 3, 5, true)]
    public void DownsampleConvMatchesFloat64(int batch, int height, int width, int cin, int cout, bool bias) =>
        // The VAE's Downsample: F.pad(x, (0, 1, 0, 1)) then a 3×3 stride-2 conv without padding.
        new ImageOpChecks(backend).Conv2d(batch, height, width, cin, cout, 3, 2, new Padding2d(0, 0, 1, 1), bias);

    [Fact]
    public void Conv2dWithBFloat16WeightsWidenedOnUpload() =>
        new ImageOpChecks(backend).Conv2d(1, 5, 7, 3, 5, 3, 1, Padding2d.Same(1), true, DType.BF16);

    [Fact]
    public void OneByOneConvWithPaddingAndStrideIsNotALinear() =>
        new ImageOpChecks(backend).Conv2d(1, 5, 7, 3, 5, 1, 2, new Padding2d(1, 0, 0, 2), true);

    [Theory]
    [InlineData(1, 64, 64, 128, 32, true, 0f)]   // the spec's tolerance case: 1e-6 relative on 64×64×128
    [InlineData(2, 5, 7, 64, 32, false, 0f)]
    [InlineData(1, 5, 7, 64, 64, true, 0f)]      // groups == channels
    [InlineData(2, 3, 5, 12, 3, true, 50f)]      // |mean| ≫ std
    public void GroupNormMatchesFloat64(int batch, int height, int width, int channels, int groups, bool affine, float offset)
    {
        var checks = new ImageOpChecks(backend);
        checks.GroupNorm(batch, height, width, channels, groups, affine, offset);
        checks.GroupNorm(batch, height, width, channels, groups, affine, offset, inPlace: true);
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(2, 3, 5, 7)]
    [InlineData(1, 4, 4, 32)]
    public void UpsampleNearest2xRepeatsEachPixel(int batch, int height, int width, int channels)
    {
        var checks = new ImageOpChecks(backend);
        checks.UpsampleNearest2x(batch, height, width, channels);
        checks.UpsampleNearest2x(batch, height, width, channels, dense: true);
    }

    [Fact]
    public void RejectsUnsupportedViews() => new ImageOpChecks(backend).RejectsWhatItDoesNotSupport();

    [Fact]
    public void PortableAndAvx2KernelsGiveTheSameConv()
    {
        // The packed weight depends on the micro-kernel's panel width; every kernel must produce the same conv.
        var shape = new ConvShape(1, 6, 5, 7, 9, 3, 3, 1, Padding2d.Same(1), 6, 5);
        using var x = (CpuTensor)backend.Upload(new HostTensor([1, 30, 7], Enumerable.Range(0, 210).Select(i => MathF.Sin(i)).ToArray()));
        using var w = (CpuTensor)backend.Upload(new HostTensor([9, 7, 3, 3], Enumerable.Range(0, 567).Select(i => MathF.Cos(i)).ToArray()));
        float[]? first = null;
        foreach (var kernel in new[] { GemmKernel.Portable, GemmKernel.Avx2, CpuGemm.BestKernel })
        {
            if (kernel == GemmKernel.Avx2 && !(Fma.IsSupported && Avx.IsSupported)) continue;
            using var y = (CpuTensor)backend.Allocate([1, 30, 9]);
            unsafe { CpuConv.Run(shape, y, x, w, null, kernel); }
            float[] values = y.Span.ToArray();
            if (first is null) first = values;
            else for (int i = 0; i < values.Length; i++) Assert.Equal(first[i], values[i], 1e-5f);
        }
    }
}
