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
        _ => throw new ArgumentException($"--precision must be auto, fp32 or bf16, not '{text}'"),
    };

    public static AttentionKernelChoice ParseAttention(string text) => text.ToLowerInvariant() switch
    {
        "auto" => AttentionKernelChoice.Auto,
        "flash" => AttentionKernelChoice.Flash,
        "cublas" => AttentionKernelChoice.CuBlas,
        "tiled" => AttentionKernelChoice.Tiled,
        _ => throw new ArgumentException($"--attention must be auto, flash, cublas or tiled, not '{text}'"),
    };

    /// <summary>The CPU computes in float32 whatever the precision; it only changes CUDA's matrix products.</summary>
    /// <param name="localRank">A data-parallel rank's index on its machine: it takes the GPU of that index (modulo those visible).</param>
    /// <param name="offload">Keep weight matrices in host memory and stream them to the GPU (--offload); CUDA only.</param>
    /// <param name="attention">CUDA's attention kernel (--attention); the CPU has one.</param>
    public static IBackend Create(DeviceChoice choice, GpuPrecision precision = GpuPrecision.Float32, int localRank = 0, WeightOffload? offload = null,
        AttentionKernelChoice attention = AttentionKernelChoice.Auto)
    {
        bool cuda = choice == DeviceChoice.Cuda || choice == DeviceChoice.Auto && IlgpuBackend.IsCudaAvailable();
        if (!cuda)
            return offload is null
                ? new CpuBackend()
                : throw new ArgumentException(choice == DeviceChoice.Cpu
                    ? "--offload streams weights from host memory to a GPU; with --device cpu they are in host memory already: drop --offload"
                    : $"--offload needs a CUDA device ({IlgpuBackend.CudaAvailability}): drop --offload to run on the CPU");
        var backend = IlgpuBackend.CreateCuda(IlgpuBackend.DeviceForRank(localRank), precision);
        try
        {
            backend.AttentionKernel = attention;
            if (offload is not null)
                backend.EnableWeightOffload(offload);
            return backend;
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }
}
