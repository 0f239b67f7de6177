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

    public static IBackend Create(DeviceChoice choice) => choice switch
    {
        DeviceChoice.Cpu => new CpuBackend(),
        DeviceChoice.Cuda => IlgpuBackend.CreateCuda(),
        _ => IlgpuBackend.IsCudaAvailable() ? IlgpuBackend.CreateCuda() : new CpuBackend(),
    };
}
