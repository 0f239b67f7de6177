using System.Reflection;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Devices;

/// <summary>What one family of kernels came to on the device: how many built, and the heaviest resource use among them.</summary>
public sealed record KernelFamilySummary(string Family, int Kernels, int Built, int MostRegisters, int Spilling, int MostSharedBytes);

/// <summary>
/// Builds every GPU kernel of this build with the CUDA driver before any work needs it (the runtime's kernels and each
/// compiled model's fused kernels), so a driver or device that cannot run one is named up front, with ptxas's message,
/// and the registers and spills of each kernel are known (spills are what slow a tensor-core kernel down first).
/// </summary>
public static class KernelBuildCheck
{
    /// <summary>The runtime's kernels, then each compiled model's fused kernels (family "fused FluxFillDev", …).</summary>
    public static IReadOnlyList<GpuKernelCatalog.Entry> Kernels()
    {
        var fused = typeof(ModelCatalog).Assembly.GetTypes()
            .Where(type => type.Name == "FusedKernels" && type.DeclaringType != null)
            .OrderBy(type => type.DeclaringType!.Name, StringComparer.Ordinal)
            .SelectMany(type => type.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly)
                .Where(method => method.ReturnType == typeof(void))
                // The generator emits every fused kernel explicitly grouped (a row per group).
                .Select(method => new GpuKernelCatalog.Entry($"fused {type.DeclaringType!.Name}", method, ExplicitlyGrouped: true)));
        return GpuKernelCatalog.All.Concat(fused).ToList();
    }

    /// <summary>Builds <see cref="Kernels"/> on <paramref name="backend"/>'s CUDA device.</summary>
    public static IReadOnlyList<KernelBuild> Run(IlgpuBackend backend, IProgress<StageProgress>? progress = null) =>
        backend.BuildKernels(Kernels(), StageProgress.Of(progress, "building kernels", "kernels"));

    public static IReadOnlyList<KernelFamilySummary> Summarize(IEnumerable<KernelBuild> builds) =>
        builds.GroupBy(build => build.Family)
            .Select(family => new KernelFamilySummary(family.Key, family.Count(), family.Count(b => b.Built),
                family.Where(b => b.Built).Select(b => b.Registers).DefaultIfEmpty(0).Max(),
                family.Count(b => b.Built && b.LocalBytesPerThread > 0),
                family.Where(b => b.Built).Select(b => b.SharedBytes).DefaultIfEmpty(0).Max()))
            .ToList();
}
