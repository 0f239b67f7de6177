using InFluxEdit.Benchmarks;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Benchmarks;

/// <summary>The FLOP accounting behind `bench --profile`'s TFLOP/s: per op from the shapes, then work over profiled time.</summary>
public sealed class AchievedRateTests
{
    [Fact]
    public void Each_op_counts_its_own_work_from_the_shapes()
    {
        using var cpu = new CpuBackend();
        var counting = new CountingBackend(cpu, profile: true);
        // A product: batch 2 of [M = 3, K = 5] times a [N = 7, K = 5] weight: 2·M·N·K per sample.
        using var x = cpu.Upload(new HostTensor(2, 3, 5));
        using var weight = cpu.Upload(new HostTensor(7, 5));
        using var y = cpu.Allocate([2, 3, 7]);
        counting.Linear(y, x, weight, null);
        // Attention: B = 2, H = 3 heads of D = 4 (12 columns), Lq = 5 queries over Lk = 6 keys: 4·B·H·Lq·Lk·D.
        using var q = cpu.Upload(new HostTensor(2, 5, 12));
        using var kv = cpu.Upload(new HostTensor(2, 6, 12));
        using var o = cpu.Allocate([2, 5, 12]);
        counting.Attention(o, q, kv, kv, heads: 3, scale: 0.5f);
        counting.Attention(o, q, kv, kv, heads: 3, scale: 0.5f);

        double linear = 2.0 * 2 * 3 * 7 * 5, attention = 4.0 * 2 * 3 * 5 * 6 * 4;
        counting.OperationsByOp[nameof(CountingBackend.Linear)].ShouldBe(linear);
        counting.OperationsByOp[nameof(CountingBackend.Attention)].ShouldBe(2 * attention);
        counting.FloatingPointOperations.ShouldBe(linear + 2 * attention);
        counting.Profile[nameof(CountingBackend.Attention)].Calls.ShouldBe(2);

        counting.ResetCount();
        counting.OperationsByOp.ShouldBeEmpty();
    }

    [Fact]
    public void Achieved_rates_are_the_work_of_each_group_over_its_time()
    {
        var profile = new OpProfile(
            new Dictionary<string, (double Seconds, int Calls)>
            {
                ["Linear"] = (0.5, 10), ["Gemm"] = (0.25, 4), ["Attention"] = (0.2, 2), ["AttentionBackward"] = (0.3, 2), ["GeluTanh"] = (0.1, 3),
            },
            new Dictionary<string, double> { ["Linear"] = 400e12, ["Gemm"] = 200e12, ["Attention"] = 60e12, ["AttentionBackward"] = 90e12 });

        var achieved = profile.Achieved;

        // Products: (400 + 200) TFLOP in 0.75 s; attention: (60 + 90) TFLOP in 0.5 s; element-wise ops are in neither.
        achieved.Products!.TeraflopsPerSecond.ShouldBe(600.0 / 0.75, 1e-9);
        achieved.Attention!.TeraflopsPerSecond.ShouldBe(150.0 / 0.5, 1e-9);
        new OpProfile(new Dictionary<string, (double, int)> { ["Linear"] = (1, 1) }, new Dictionary<string, double>()).Achieved.Attention.ShouldBeNull();
    }
}
