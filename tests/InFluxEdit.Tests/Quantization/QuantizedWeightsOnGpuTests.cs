using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Gpu;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// The CUDA backend (here its ILGPU CPU simulator) keeps a quantized weight's blocks on the device, and its Linear, which
/// dequantizes them into a scratch buffer, agrees with the CPU's, which decodes a panel at a time.
/// </summary>
public sealed class QuantizedWeightsOnGpuTests(SimulatorBackendFixture fixture) : IClassFixture<SimulatorBackendFixture>
{
    [Theory]
    [InlineData(TensorFormat.Q8_0)]
    [InlineData(TensorFormat.Q4_K)]
    [InlineData(TensorFormat.F8_E4M3)]
    public void TheGpuKeepsTheBlocksAndComputesWhatTheCpuComputes(TensorFormat format)
    {
        const int rows = 5, outFeatures = 19, inFeatures = 256;
        var random = new Random(11);
        var values = new float[outFeatures * inFeatures];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() - 0.5) * 0.1f;
        var blocks = QuantizationPlan.Quantize(format, values);
        var input = new HostTensor(rows, inFeatures);
        for (int i = 0; i < input.Data.Length; i++) input.Data[i] = (float)(random.NextDouble() * 2 - 1);

        IBackend gpu = fixture.Backend;
        gpu.HoldsQuantizedWeights.ShouldBeTrue();
        using var gpuWeight = gpu.UploadQuantizedWeight([outFeatures, inFeatures], blocks);
        gpuWeight.StoredBytes.ShouldBe(blocks.Bytes.LongLength, "held in its blocks");
        using var gpuX = gpu.Upload(input);
        using var gpuY = gpu.Allocate([rows, outFeatures]);
        gpu.Linear(gpuY, gpuX, gpuWeight, null);
        float[] fromGpu = gpu.Download(gpuY, gpuY.Shape).Data;

        using var cpu = new CpuBackend();
        using var cpuWeight = cpu.UploadQuantizedWeight([outFeatures, inFeatures], blocks);
        using var cpuX = cpu.Upload(input);
        using var cpuY = cpu.Allocate([rows, outFeatures]);
        cpu.Linear(cpuY, cpuX, cpuWeight, null);
        float[] fromCpu = cpu.Download(cpuY, cpuY.Shape).Data;
        for (int i = 0; i < fromCpu.Length; i++) fromGpu[i].ShouldBe(fromCpu[i], 1e-5 + 1e-5 * Math.Abs(fromCpu[i]));
    }
}
