using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Models;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Compiles every kernel the generator fused for every model of the build to PTX (no GPU needed), as
/// <see cref="PtxCompileTests"/> does for the hand-written kernels: one Context per model, since a failing kernel
/// poisons its Context.
/// </summary>
public sealed class FusedKernelPtxTests
{
    private static List<string> ModelNames() =>
        typeof(ModelCatalog).Assembly.GetTypes()
            .Where(t => t.Name == "FusedKernels" && t.DeclaringType != null)
            .Select(t => t.DeclaringType!.Name).OrderBy(n => n, StringComparer.Ordinal).ToList();

    public static TheoryData<string> ModelsWithFusedKernels() => new(ModelNames());

    [Theory]
    [MemberData(nameof(ModelsWithFusedKernels))]
    public void FusedKernelsCompileToPtx(string model)
    {
        var kernels = typeof(ModelCatalog).Assembly.GetTypes()
            .Single(t => t.Name == "FusedKernels" && t.DeclaringType?.Name == model)
            .GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly);
        Assert.NotEmpty(kernels);
        using var context = Context.Create(builder => builder.EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var backend = new PTXBackend(context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_88, nvvmAPI: null!);
        foreach (var kernel in kernels)
        {
            var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), default);
            Assert.Contains(".entry", compiled.PTXAssembly);
            Assert.Contains(".shared", compiled.PTXAssembly);
        }
    }

    [Fact]
    public void TheTransformersAndT5HaveFusedKernels()
    {
        var models = ModelNames();
        Assert.Contains(nameof(FluxFillDev), models);
        Assert.Contains(nameof(FluxFillTiny), models);
        Assert.Contains(nameof(T5Xxl), models);
    }
}
