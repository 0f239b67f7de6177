using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class FlowMatchingAndProgressTests
{
    [Theory]
    [InlineData(TimestepSampling.Uniform)]
    [InlineData(TimestepSampling.LogitNormal)]
    [InlineData(TimestepSampling.Mode)]
    public void Sigmas_lie_on_the_training_schedules_grid(TimestepSampling sampling)
    {
        var random = new TrainingRandom(4);
        var sigmas = Enumerable.Range(0, 20_000).Select(_ => FlowMatching.SampleSigma(random, sampling)).ToList();
        sigmas.ShouldAllBe(s => s >= 0.001 && s <= 1.0 && Math.Abs(s * 1000 - Math.Round(s * 1000)) < 1e-9);
        // Uniform, logit-normal(0, 1) and the mode density (symmetric about v = 1/2) all have mean 1/2.
        sigmas.Average().ShouldBe(0.5, 0.01);
        if (sampling == TimestepSampling.LogitNormal)
            sigmas.Count(s => s is > 0.25 and < 0.75).ShouldBeGreaterThan(sigmas.Count(s => s is <= 0.25 or >= 0.75)); // mass in the middle
    }

    [Fact]
    public void Mode_density_maps_the_ends_to_the_ends()
    {
        FlowMatching.ModeDensity(0, FlowMatching.ModeScale).ShouldBe(1, 1e-15);
        FlowMatching.ModeDensity(1, FlowMatching.ModeScale).ShouldBe(0, 1e-15);
    }

    [Fact]
    public void Interpolant_and_target_follow_the_flow_definition()
    {
        var x0 = new HostTensor([1, 2, 2], [1f, -2f, 0.5f, 4f]);
        var noise = new HostTensor([1, 2, 2], [0f, 2f, -1f, 1f]);
        var xt = FlowMatching.Interpolate(x0, noise, 0.25);
        for (int i = 0; i < 4; i++) xt.Data[i].ShouldBe(0.75f * x0.Data[i] + 0.25f * noise.Data[i], 1e-6f);
        FlowMatching.Interpolate(x0, noise, 1).Data.ShouldBe(noise.Data);
        FlowMatching.VelocityTarget(x0, noise).Data.ShouldBe(noise.Data.Zip(x0.Data, (n, x) => n - x).ToArray());
    }

    [Fact]
    public void Masked_loss_region_counts_only_masked_tokens()
    {
        // Two tokens of four mask values: the first kept (0), the second generated (1).
        var mask = new HostTensor([1, 2, 4], [0, 0, 0, 0, 1, 1, 1, 1]);
        FlowMatching.TokenWeights(LossRegion.All, mask).ShouldBe([1f, 1f]);
        var weights = FlowMatching.TokenWeights(LossRegion.Masked, mask);
        weights.ShouldBe([0f, 1f]);
        var prediction = new HostTensor([1, 2, 2], [5f, 5f, 1f, 3f]);
        var target = new HostTensor([1, 2, 2], [0f, 0f, 0f, 0f]);
        FlowMatching.WeightedMse(prediction, target, weights).ShouldBe((1 + 9) / 2.0, 1e-12);
        FlowMatching.WeightedMse(prediction, target, [1f, 1f]).ShouldBe((25 + 25 + 1 + 9) / 4.0, 1e-12);
        Should.Throw<ArgumentException>(() => FlowMatching.TokenWeights(LossRegion.Masked, new HostTensor(1, 2, 4)));
    }

    [Fact]
    public void Progress_reports_rate_eta_and_a_debiased_average()
    {
        var now = TimeSpan.Zero;
        var progress = new TrainingProgress(totalSteps: 110, firstStep: 10, smoothing: 0.5, clock: () => now);
        progress.Report(11, 2.0);
        progress.SmoothedLoss.ShouldBe(2.0, 1e-12); // debiased: one value averages to itself
        progress.Report(12, double.NaN);
        progress.SmoothedLoss.ShouldBe(2.0, 1e-12);
        progress.Report(12, 4.0);
        progress.SmoothedLoss.ShouldBe((0.5 * 0.5 * 2 + 0.5 * 4) / (1 - 0.25), 1e-12);
        now = TimeSpan.FromSeconds(4);
        progress.StepsPerSecond.ShouldBe(0.5, 1e-12); // 2 steps of this run in 4 s
        progress.Remaining.ShouldBe(TimeSpan.FromSeconds(98 / 0.5));
        string line = progress.FormatLine(managedBytes: 3L << 30, processBytes: 512L << 20);
        line.ShouldContain("step 12/110");
        line.ShouldContain("0.50 it/s");
        line.ShouldContain("3.0 GiB managed");
        line.ShouldContain("512 MiB process");
    }

    [Fact]
    public void NonFinite_steps_are_skipped_then_stop_the_run()
    {
        var warnings = new List<string>();
        var guard = new NonFiniteGuard(maxConsecutive: 3, warnings.Add);
        guard.Check(1, double.NaN, 1).ShouldBe(NonFiniteDecision.Skip);
        guard.Check(2, 0.1, 1).ShouldBe(NonFiniteDecision.Apply);
        guard.Check(3, 0.1, double.PositiveInfinity).ShouldBe(NonFiniteDecision.Skip);
        guard.Check(4, double.NaN, 1).ShouldBe(NonFiniteDecision.Skip);
        warnings.Count.ShouldBe(3);
        warnings[1].ShouldContain("gradient norm");
        Should.Throw<TrainingDivergedException>(() => guard.Check(5, double.NaN, double.NaN)).Message.ShouldContain("3 steps in a row");
        guard.TotalSkipped.ShouldBe(4);
    }
}
