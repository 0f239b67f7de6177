using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Runtime.Backends;

public enum DeviceChoice { Auto, Cpu, Cuda }

/// <summary>Picks the backend: CUDA when asked or when a GPU is present, the CPU otherwise.</summary>
public static class BackendFactory
{
    public static DeviceChoice ParseChoice(string text) => text.ToLowerInvariant() switch
    {
        "auto" => DeviceChoice.Auto,
        "cpu" => DeviceChoice.Cpu,
        "cuda" or "gpu" => DeviceChoice.Cuda,
        _ => throw new ArgumentException($"--device must be auto, cpu or cuda, not '{text}'"),
    };

    public static GpuPrecision ParsePrecision(string text) => text.ToLowerInvariant() switch
    {
        "fp32" or "float32" => GpuPrecision.Float32,
        "bf16" or "bfloat16" => GpuPrecision.BFloat16,
        _ => throw new ArgumentException($"--precision must be fp32 or bf16, not '{text}'"),
    };

    /// <summary>The CPU computes in float32 whatever the precision; it only changes CUDA's matrix products.</summary>
    /// <param name="localRank">A data-parallel rank's index on its machine: it takes the GPU of that index (modulo those visible).</param>
    public static IBackend Create(DeviceChoice choice, GpuPrecision precision = GpuPrecision.Float32, int localRank = 0) => choice switch
    {
        DeviceChoice.Cpu => new CpuBackend(),
        DeviceChoice.Cuda => IlgpuBackend.CreateCuda(IlgpuBackend.DeviceForRank(localRank), precision),
        _ => IlgpuBackend.IsCudaAvailable() ? IlgpuBackend.CreateCuda(IlgpuBackend.DeviceForRank(localRank), precision) : new CpuBackend(),
    };
}
