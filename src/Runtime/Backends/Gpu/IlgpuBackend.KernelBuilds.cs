using System.Text.RegularExpressions;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// One kernel as the CUDA driver built it for this device: <see cref="Error"/> says why it could not be built (ILGPU's
/// message, or the JIT's error log with ptxas's PTX line numbers); otherwise its registers and local memory per thread
/// (local memory is where registers spill), its static shared memory and the most threads a group may have.
/// </summary>
public sealed record KernelBuild(string Family, string Kernel, string? Error, int Registers, int LocalBytesPerThread, int SharedBytes, int MaxThreadsPerGroup)
{
    public bool Built => Error is null;
}

// Building every kernel up front, for `influx-cli doctor`: a kernel the driver cannot JIT otherwise fails at its first
// launch, deep inside a forward, with a bare CUDA error code.
public sealed partial class IlgpuBackend
{
    private static readonly Regex PtxEntryName = new(@"\.entry\s+([A-Za-z_$][\w$]*)", RegexOptions.CultureInvariant);

    /// <summary>
    /// Builds each kernel as its first launch would (ILGPU's PTX for this device, then the driver's JIT) without
    /// launching it. CUDA only: the simulator runs .NET code, not PTX.
    /// </summary>
    /// <exception cref="InvalidOperationException">The backend is not on a CUDA device.</exception>
    public IReadOnlyList<KernelBuild> BuildKernels(IReadOnlyList<GpuKernelCatalog.Entry> kernels, IProgress<(int Done, int Total)>? progress = null)
    {
        ThrowIfDisposed();
        if (accelerator is not CudaAccelerator)
            throw new InvalidOperationException($"building kernels with the CUDA driver needs a CUDA device, not {accelerator.Name}");
        accelerator.Bind();
        var results = new List<KernelBuild>();
        foreach (var entry in kernels)
        {
            string name = $"{entry.Method.DeclaringType?.Name}.{entry.Method.Name}";
            KernelBuild Failed(string error) => new(entry.Family, name, error, 0, 0, 0, 0);
            string ptx;
            try
            {
                var description = entry.ExplicitlyGrouped
                    ? EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method)
                    : EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method);
                ptx = ((PTXCompiledKernel)accelerator.CompileKernel(description, default)).PTXAssembly;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                results.Add(Failed($"ILGPU could not compile it to PTX: {e.GetType().Name}: {e.Message}"));
                progress?.Report((results.Count, kernels.Count));
                continue;
            }
            var match = PtxEntryName.Match(ptx);
            if (!match.Success)
            {
                results.Add(Failed("ILGPU's PTX has no .entry"));
            }
            else
            {
                var jit = CudaDriverNative.Instance.JitCompile(ptx, match.Groups[1].Value);
                results.Add(jit.Compiled
                    ? new KernelBuild(entry.Family, name, null, jit.Registers, jit.LocalBytesPerThread, jit.SharedBytes, jit.MaxThreadsPerGroup)
                    : Failed(jit.Log));
            }
            progress?.Report((results.Count, kernels.Count));
        }
        return results;
    }

    /// <summary>The device's free and total memory; null off CUDA.</summary>
    public (long Free, long Total)? DeviceMemory()
    {
        ThrowIfDisposed();
        if (accelerator is not CudaAccelerator)
            return null;
        accelerator.Bind();
        return CudaDriverNative.Instance.MemoryInfo();
    }
}
