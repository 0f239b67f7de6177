using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

// Weight offloading (see WeightResidency): which weights go to host memory, and the backend's report of it.
public sealed partial class IlgpuBackend
{
    private WeightResidency? residency;

    /// <summary>
    /// From now on, weight matrices (two or more dimensions) that <see cref="UploadWeight"/> receives stay in host memory
    /// and are copied into a device arena of <see cref="WeightOffload.BudgetBytes"/> when ops read them; vectors (biases,
    /// norm scales) are small and stay on the device. Call before loading weights.
    /// </summary>
    /// <exception cref="ArgumentException">The budget is not positive or exceeds the device's free memory.</exception>
    public void EnableWeightOffload(WeightOffload offload)
    {
        ThrowIfDisposed();
        if (residency is not null)
            throw new InvalidOperationException("weight offloading is already enabled on this backend");
        accelerator.Bind();
        long? free = accelerator is CudaAccelerator ? CudaDriverNative.Instance.MemoryInfo().Free : null;
        long budget = offload.BudgetBytes
            ?? (free is long freeBytes
                ? (long)(freeBytes * WeightOffload.DefaultShareOfFreeMemory)
                : throw new ArgumentException("weight offload on the ILGPU simulator needs an explicit budget"));
        if (budget <= 0)
            throw new ArgumentException($"--gpu-memory-budget must be positive, not {budget} bytes");
        if (free is long available && budget > available)
            throw new ArgumentException(
                $"--gpu-memory-budget {WeightResidency.Format(budget)} is more than the {WeightResidency.Format(available)} free on {accelerator.Name}: lower it");
        residency = new WeightResidency(accelerator, budget);
        Description += $"; weight matrices offloaded to {(residency.CopiesOverlapCompute ? "page-locked " : "")}host memory, " +
            $"copied to a {WeightResidency.Format(budget)} device budget ahead of use" +
            (residency.CopiesOverlapCompute ? " on a second stream" : " in order with the kernels (simulator)");
    }

    /// <summary>The device's free memory now (cuMemGetInfo); null on the simulator.</summary>
    public long? FreeDeviceBytes()
    {
        ThrowIfDisposed();
        accelerator.Bind();
        return accelerator is CudaAccelerator ? CudaDriverNative.Instance.MemoryInfo().Free : null;
    }

    /// <summary>The offload arena's device bytes (0 without offloading): part of the memory statistics.</summary>
    private long OffloadArenaBytes => residency?.BudgetBytes ?? 0;

    /// <summary>What offloading holds and has copied, for tests and reports; null without offloading.</summary>
    internal WeightResidency? Offload => residency;

    /// <summary>One line on the offloaded weights (count, host bytes, copies so far), or null without offloading.</summary>
    public string? OffloadSummary => residency is null ? null :
        $"{residency.OffloadedWeights} weight matrices ({WeightResidency.Format(residency.OffloadedBytes)}) held in host memory" +
        (residency.PageableHostBytes > 0 ? $" ({WeightResidency.Format(residency.PageableHostBytes)} could not be page-locked: slower copies)" : "") +
        $", at most {WeightResidency.Format(residency.PeakResidentBytes)} of them on the device at once (budget {WeightResidency.Format(residency.BudgetBytes)}), " +
        $"{residency.CopyCount} copies ({WeightResidency.Format(residency.CopiedBytes)}) so far";

    private bool Offloads(int[] shape) => GpuMemoryPolicy.Offloads(residency is not null, shape);

    private GpuTensor UploadOffloaded(int[] shape, DType dtype, ReadOnlySpan<byte> deviceBytes) =>
        new(this, shape, dtype, residency!.Register(deviceBytes, $"a {dtype}{HostTensor.FormatShape(shape)} weight"));
}
