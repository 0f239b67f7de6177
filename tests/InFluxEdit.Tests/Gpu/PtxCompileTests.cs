using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Compiles every kernel to PTX with ILGPU's PTX backend, which needs no GPU or driver: CUDA code generation is
/// checked on every test run, not only on the GPU machines. One Context per family (a failing kernel poisons its
/// Context). The driver's JIT from PTX to SASS still only happens on a GPU.
/// </summary>
public sealed class PtxCompileTests
{
    private const int SharedMemoryLimitBytes = 48 * 1024;

    public static TheoryData<string> Families() =>
        new(GpuKernelCatalog.All.Select(e => e.Family).Distinct());

    [Theory]
    [MemberData(nameof(Families))]
    public void EveryKernelCompilesToPtxWithinTheSharedMemoryLimit(string family)
    {
        using var context = Context.Create(builder => builder.EnableAlgorithms().Optimize(OptimizationLevel.O1));
        foreach (var architecture in new[] { CudaArchitecture.SM_80, CudaArchitecture.SM_90 })
        {
            using var backend = new PTXBackend(context, architecture, CudaInstructionSet.ISA_88, nvvmAPI: null!);
            foreach (var entry in GpuKernelCatalog.All.Where(e => e.Family == family))
            {
                var description = entry.ExplicitlyGrouped
                    ? EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method)
                    : EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method);
                var kernel = (PTXCompiledKernel)backend.Compile(description, default);
                string ptx = kernel.PTXAssembly;
                Assert.Contains(".entry", ptx);
                // ILGPU 1.5.3 writes its capability target (sm_80) even when asked for sm_90; the driver JITs it.
                Assert.Matches(@"\.target sm_\d+", ptx);
                long sharedBytes = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]")
                    .Sum(m => long.Parse(m.Groups[1].Value));
                if (entry.ExplicitlyGrouped)
                    Assert.True(sharedBytes > 0, $"{entry.Method.Name}: no shared allocation found in its PTX");
                if (entry.Method.DeclaringType == typeof(FlashAttentionKernels))
                    // Once per call site of TensorCoreMma; the emulation beside it is a branch on a constant the
                    // driver's JIT removes (ILGPU lowers CudaAsm.IsSupported to a constant only as it writes PTX).
                    Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", ptx);
                Assert.True(sharedBytes <= SharedMemoryLimitBytes,
                    $"{entry.Method.Name} uses {sharedBytes} bytes of static shared memory");
            }
        }
    }

    [Fact]
    public void CatalogCoversEveryFamily()
    {
        var names = GpuKernelCatalog.All.Select(e => e.Method.Name).ToHashSet();
        foreach (string kernel in new[] { "Copy", "Add", "Silu", "GeluTanh", "Modulate", "GatedResidual", "LayerNorm",
                     "RmsNorm", "Timestep", "Rope", "ApplyRope", "Attention", "LinearFloat32", "LinearBFloat16",
                     "LinearFloat16", "RoundToBFloat16", "WidenBFloat16", "AddBiasToRows", "SoftmaxRows",
                     "SiluBackward", "GeluTanhBackward", "ApplyRopeBackward", "Fill", "ScaleInPlace", "AdamW",
                     "SumRowsPartials", "ModulateBackwardPartials", "GatedResidualBackwardPartials", "FinishColumnSums",
                     "LayerNormBackward", "RmsNormBackward", "SoftmaxBackwardRows", "SumOfSquaresPartials", "GeneralGemm",
                     nameof(FlashAttentionKernels.Forward), nameof(FlashAttentionKernels.Backward), nameof(FlashAttentionRowKernels.RowDots),
                     nameof(FlashAttentionRowKernels.StoreQueryGradient) })
            Assert.Contains(kernel, names);
    }
}
