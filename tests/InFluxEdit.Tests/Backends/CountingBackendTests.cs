using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Backends;

public sealed class CountingBackendTests
{
    [Fact]
    public void Training_products_pass_through_and_count_two_operations_per_multiply_add()
    {
        using var cpu = new CpuBackend();
        var counting = new CountingBackend(cpu, profile: true);
        var random = new Random(7);
        HostTensor Random(params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)random.NextDouble() - 0.5f;
            return t;
        }
        using var a = cpu.Upload(Random(2, 5, 3));   // two batches of [M = 5, K = 3]
        using var b = cpu.Upload(Random(2, 3, 4));   // [K = 3, N = 4]
        using var direct = cpu.Allocate([2, 5, 4]);
        using var counted = cpu.Allocate([2, 5, 4]);
        cpu.Gemm(direct, a, false, b, false, 1f, 0f);
        counting.Gemm(counted, a, false, b, false, 1f, 0f);

        cpu.Download(counted, [2, 5, 4]).Data.ShouldBe(cpu.Download(direct, [2, 5, 4]).Data);
        counting.FloatingPointOperations.ShouldBe(2.0 * 2 * 5 * 4 * 3);
        counting.Profile.Keys.ShouldBe(["Gemm"]);
        counting.Profile["Gemm"].Calls.ShouldBe(1);
    }
}
