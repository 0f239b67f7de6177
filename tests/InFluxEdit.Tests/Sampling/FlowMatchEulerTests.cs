using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Sampling;

public class FlowMatchEulerTests
{
    [Fact]
    public void AConstantVelocityMovesXByVelocityTimesTheSpanOfTheSchedule()
    {
        // dx/dt = v is integrated exactly by Euler: x(0) = x(1) + (0 − 1)·v whatever the steps.
        var start = new HostTensor(new[] { 1, 3 }, new[] { 1f, 2f, 3f });
        var velocity = new HostTensor(new[] { 1, 3 }, new[] { 0.5f, -1f, 2f });
        var end = FlowMatchEuler.Sample(start, FlowMatchSchedule.Shifted(7, 300), (_, _) => velocity);
        end.Data.ShouldBe(new[] { 0.5f, 3f, 1f }, tolerance: 1e-6f);
        start.Data.ShouldBe(new[] { 1f, 2f, 3f }); // the start is not modified
    }

    [Fact]
    public void EachStepMultipliesByOnePlusDtForTheVelocityX()
    {
        // v = x gives x_{i+1} = (1 + t_{i+1} − t_i)·x_i: the product over the schedule, computed here in double.
        double[] schedule = { 1.0, 0.7, 0.25, 0.0 };
        double factor = 1;
        for (int i = 0; i < 3; i++) factor *= 1 + schedule[i + 1] - schedule[i];
        var end = FlowMatchEuler.Sample(new HostTensor(new[] { 1 }, new[] { 2f }), schedule, (_, x) => x);
        end.Data[0].ShouldBe((float)(2 * factor), 1e-6f);
    }

    [Fact]
    public void TheModelSeesEachTimestepButTheLastAndProgressCountsSteps()
    {
        double[] schedule = { 1.0, 0.5, 0.0 };
        var seen = new List<float>();
        var reports = new List<(int, int)>();
        FlowMatchEuler.Sample(new HostTensor(1), schedule, (t, x) => { seen.Add(t); return new HostTensor(1); },
            new SynchronousProgress(reports));
        seen.ShouldBe(new[] { 1f, 0.5f });
        reports.ShouldBe(new[] { (1, 2), (2, 2) });
    }

    [Fact]
    public void AVelocityOfAnotherShapeIsAnError() =>
        Should.Throw<ArgumentException>(() => FlowMatchEuler.Sample(new HostTensor(1, 4), new[] { 1.0, 0.0 }, (_, _) => new HostTensor(1, 5)))
            .Message.ShouldContain("[1, 5]");

    private sealed class SynchronousProgress(List<(int, int)> reports) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => reports.Add(value);
    }
}
