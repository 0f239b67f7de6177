using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class TrainingCheckpointTests
{
    public static TheoryData<string> OptimizerNames => new() { "adamw", "prodigy" };

    private static ToyLoraProblem Create(string optimizer) => optimizer == "adamw"
        ? new ToyLoraProblem(11, b => new AdamW(b), new LearningRateSchedule(ScheduleKind.Cosine, 5e-2, WarmupSteps: 2, TotalSteps: 60))
        : new ToyLoraProblem(11, b => new Prodigy(b), new LearningRateSchedule(ScheduleKind.Constant, Prodigy.DefaultLearningRate));

    private static TrainingCheckpointInfo Info(ToyLoraProblem run, int step) =>
        new(step, 11, run.Random.SaveState(), TrainingCheckpointInfo.FormatOrder([2, 0, 1]), "channel", ToyLoraProblem.Rank, 2.0, ["toy"], "toy-model");

    [Theory]
    [MemberData(nameof(OptimizerNames))]
    public void Resuming_from_a_checkpoint_gives_the_uninterrupted_loss_sequence(string optimizer)
    {
        const int total = 60, stopAt = 23;
        using var dir = new TempDir();
        List<double> uninterrupted;
        using (var run = Create(optimizer))
            uninterrupted = Enumerable.Range(0, total).Select(run.Step).ToList();

        var resumed = new List<double>();
        using (var first = Create(optimizer))
        {
            for (int step = 0; step < stopAt; step++) resumed.Add(first.Step(step));
            TrainingCheckpoint.Save(dir.File("ckpt.safetensors"), first.Backend, first.Parameters, first.Optimizer, Info(first, stopAt));
        }
        using (var second = Create(optimizer))
        {
            var loaded = TrainingCheckpoint.Load(dir.File("ckpt.safetensors"));
            loaded.Restore(second.Backend, second.Parameters, second.Optimizer);
            second.Random = TrainingRandom.RestoreState(loaded.Info.RandomState);
            for (int step = loaded.Info.Step; step < total; step++) resumed.Add(second.Step(step));
        }

        resumed.ShouldBe(uninterrupted); // exactly, not approximately
        uninterrupted.Skip(total - 5).Average().ShouldBeLessThan(uninterrupted.Take(5).Average() * 0.5, $"{optimizer} should learn the toy map");
    }

    [Fact]
    public void Metadata_round_trips()
    {
        using var dir = new TempDir();
        using var run = Create("prodigy");
        run.Step(0);
        var info = Info(run, 1) with { Extra = new Dictionary<string, string> { ["schedule"] = "constant" } };
        TrainingCheckpoint.Save(dir.File("c.safetensors"), run.Backend, run.Parameters, run.Optimizer, info);
        var loaded = TrainingCheckpoint.Load(dir.File("c.safetensors"));
        loaded.Info.Targets.ShouldBe(info.Targets);
        (loaded.Info with { Targets = info.Targets, Extra = info.Extra }).ShouldBe(info);
        loaded.Info.Extra["schedule"].ShouldBe("constant");
        TrainingCheckpointInfo.ParseOrder(loaded.Info.DataOrder).ShouldBe([2, 0, 1]);
        loaded.Optimizer.Scalars["d"].ShouldBe(((Prodigy)run.Optimizer).D); // F64, bit for bit
    }

    [Fact]
    public void Non_finite_values_are_never_written_and_the_old_checkpoint_survives()
    {
        using var dir = new TempDir();
        using var run = Create("adamw");
        run.Step(0);
        string path = dir.File("c.safetensors");
        TrainingCheckpoint.Save(path, run.Backend, run.Parameters, run.Optimizer, Info(run, 1));
        byte[] before = File.ReadAllBytes(path);

        var poisoned = new HostTensor([ToyLoraProblem.Out, ToyLoraProblem.Rank]);
        poisoned.Data[3] = float.NaN;
        TensorTransfer.Overwrite(run.Backend, run.Parameters[1].Value, poisoned);
        var error = Should.Throw<NonFiniteCheckpointException>(() =>
            TrainingCheckpoint.Save(path, run.Backend, run.Parameters, run.Optimizer, Info(run, 2)));
        error.Message.ShouldContain("toy.lora_B");
        File.ReadAllBytes(path).ShouldBe(before);
        Directory.GetFiles(dir.Path).Length.ShouldBe(1); // no temporary left behind
    }

    [Fact]
    public void Restoring_into_other_parameters_or_optimizer_is_refused()
    {
        using var dir = new TempDir();
        using var run = Create("adamw");
        run.Step(0);
        TrainingCheckpoint.Save(dir.File("c.safetensors"), run.Backend, run.Parameters, run.Optimizer, Info(run, 1));
        var loaded = TrainingCheckpoint.Load(dir.File("c.safetensors"));
        using var prodigy = new Prodigy(run.Backend);
        Should.Throw<InvalidDataException>(() => loaded.Restore(run.Backend, run.Parameters, prodigy)).Message.ShouldContain("adamw");
        Should.Throw<InvalidDataException>(() => loaded.Restore(run.Backend, run.Parameters.Take(1).ToList(), run.Optimizer))
            .Message.ShouldContain("toy.lora_B");
        SafeTensorsWriter.Write(dir.File("other.safetensors"), [new("x", new HostTensor(2))]);
        Should.Throw<InvalidDataException>(() => TrainingCheckpoint.Load(dir.File("other.safetensors")));
    }
}
