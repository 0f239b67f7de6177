using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Backends;

/// <summary>Transpose and ScaleShift on both backends (the GPU one on ILGPU's CPU simulator), against plain loops.</summary>
public class LayoutOpTests
{
    public static TheoryData<string> Backends() => new() { "cpu", "gpu-simulator" };

    private static IBackend Create(string name) => name == "cpu" ? new CpuBackend() : IlgpuBackend.CreateCpuSimulator();

    private static HostTensor Random(int seed, params int[] shape)
    {
        var random = new Random(seed);
        var t = new HostTensor(shape);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return t;
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void TransposeSwapsRowsAndColumnsPerSample(string backendName)
    {
        using var backend = Create(backendName);
        var x = Random(1, 2, 5, 7);
        using var xDevice = backend.Upload(x);
        using var yDevice = backend.Allocate(new[] { 2, 7, 5 });
        backend.Transpose(yDevice, xDevice);
        var y = backend.Download(yDevice, yDevice.Shape);
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < 5; r++)
                for (int c = 0; c < 7; c++)
                    y.Data[(b * 7 + c) * 5 + r].ShouldBe(x.Data[(b * 5 + r) * 7 + c]);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void TransposeReadsAStridedColumnSlice(string backendName)
    {
        using var backend = Create(backendName);
        var x = Random(2, 1, 4, 9);
        using var xDevice = backend.Upload(x);
        using var yDevice = backend.Allocate(new[] { 1, 3, 4 });
        backend.Transpose(yDevice, xDevice.AsView().Columns(5, 3));
        var y = backend.Download(yDevice, yDevice.Shape);
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 3; c++)
                y.Data[c * 4 + r].ShouldBe(x.Data[r * 9 + 5 + c]);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void TransposeRejectsMismatchedShapes(string backendName)
    {
        using var backend = Create(backendName);
        using var x = backend.Allocate(new[] { 1, 4, 9 });
        using var y = backend.Allocate(new[] { 1, 4, 9 });
        Should.Throw<ArgumentException>(() => backend.Transpose(y, x));
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ScaleShiftIsAffineAndWorksInPlace(string backendName)
    {
        using var backend = Create(backendName);
        var x = Random(3, 3, 17);
        using var xDevice = backend.Upload(x);
        backend.ScaleShift(xDevice, xDevice, 0.3611f, -0.3611f * 0.1159f);
        var y = backend.Download(xDevice, xDevice.Shape);
        for (int i = 0; i < x.Data.Length; i++)
            y.Data[i].ShouldBe(0.3611f * x.Data[i] - 0.3611f * 0.1159f, 1e-6f);
    }
}
