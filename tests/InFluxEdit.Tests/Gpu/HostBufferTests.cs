using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Host bytes that offloaded weights and moved activations use: device to host and back, queued on a stream, through
/// page-locked memory (as on CUDA) and through a plain array (the fallback where the system refuses to page-lock).
/// </summary>
public sealed class HostBufferTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BytesGoToTheHostAndBackUnchanged(bool pin)
    {
        using var context = Context.Create(builder => builder.CPU());
        using var accelerator = context.CreateCPUAccelerator(0);
        var values = Enumerable.Range(0, 1000).Select(i => (byte)(i * 7)).ToArray();
        using var device = accelerator.Allocate1D(values);
        using var host = HostBuffer.Allocate(accelerator, values.Length, pin);
        Assert.Equal(values.Length, host.Length);
        Assert.Equal(pin, host.Pinned);

        host.CopyFrom(device.View, accelerator.DefaultStream);
        using var back = accelerator.Allocate1D<byte>(values.Length);
        host.CopyTo(back.View, accelerator.DefaultStream);
        accelerator.Synchronize();
        Assert.Equal(values, back.GetAsArray1D());
    }
}
