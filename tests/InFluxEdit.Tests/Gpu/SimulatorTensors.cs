using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>Tensors for the fused-kernel tests on a simulator backend: uniform random values in [-1, 1), copies.</summary>
internal sealed class SimulatorTensors(IlgpuBackend backend)
{
    public DeviceTensor Random(Random random, params int[] shape)
    {
        var host = new HostTensor(shape);
        for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return backend.Upload(host);
    }

    public DeviceTensor Copy(DeviceTensor tensor) => backend.Upload(backend.Download(tensor, tensor.Shape));
}
