using InFluxEdit.Devices;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Gpu;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// `influx-cli doctor`'s parts that run without a GPU: which kernels it builds, and how it sums them up per family.
/// The driver's JIT itself only runs on a CUDA device (bench/gpu-check.sh runs doctor first).
/// </summary>
public sealed class KernelBuildCheckTests
{
    [Fact]
    public void TheCheckCoversTheRuntimesKernelsAndEveryModelsFusedKernels()
    {
        var kernels = KernelBuildCheck.Kernels();
        foreach (var entry in GpuKernelCatalog.All)
            kernels.ShouldContain(entry);
        var fusedFamilies = kernels.Select(k => k.Family).Where(f => f.StartsWith("fused ", StringComparison.Ordinal)).Distinct().ToList();
        fusedFamilies.ShouldContain($"fused {nameof(FluxFillDev)}");
        fusedFamilies.ShouldContain($"fused {nameof(T5Xxl)}");
        foreach (string family in fusedFamilies)
        {
            var model = typeof(ModelCatalog).Assembly.GetTypes().Single(t => t.Name == family["fused ".Length..]);
            var declared = model.GetNestedType("FusedKernels")!.GetMethods().Where(m => m.IsStatic && m.DeclaringType!.Name == "FusedKernels");
            kernels.Where(k => k.Family == family).Select(k => k.Method).ShouldBe(declared, ignoreOrder: true);
        }
    }

    [Fact]
    public void TheSummaryCountsBuiltAndSpillingKernelsAndTheHeaviestResourcesOfTheBuiltOnes()
    {
        var builds = new[]
        {
            new KernelBuild("flash", "Forward", null, 168, 0, 36_664, 384),
            new KernelBuild("flash", "Backward", null, 255, 96, 40_000, 256),
            new KernelBuild("flash", "BackwardKeys", "ptxas fatal: unknown instruction", 0, 0, 0, 0),
            new KernelBuild("elementwise", "Copy", null, 16, 0, 0, 1024),
        };
        var summary = KernelBuildCheck.Summarize(builds).ToDictionary(s => s.Family);
        summary["flash"].ShouldBe(new KernelFamilySummary("flash", 3, 2, 255, 1, 40_000));
        summary["elementwise"].ShouldBe(new KernelFamilySummary("elementwise", 1, 1, 16, 0, 0));
    }
}
