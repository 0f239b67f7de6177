using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Tests.Gpu;

/// <summary>A test that needs a CUDA device: reported as skipped (with the reason) where there is none.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!IlgpuBackend.IsCudaAvailable()) Skip = $"no CUDA device ({IlgpuBackend.CudaAvailability})";
    }
}
