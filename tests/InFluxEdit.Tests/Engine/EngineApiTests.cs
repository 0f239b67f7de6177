using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Tests.Fill;
using InFluxEdit.Tests.Training;
using InFluxEdit.Text;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Engine;

/// <summary>
/// The engine as another program uses it, with no command line: an edit and a training run on the golden tiny
/// transformer and VAE report their progress to the caller, print nothing, and stop when cancelled.
/// </summary>
public class EngineApiTests
{
    /// <summary>Collects reports synchronously (Progress&lt;T&gt; would post them to the thread pool, after the call returns).</summary>
    private sealed class Recorder<T> : IProgress<T>
    {
        public List<T> Reports { get; } = new();
        public void Report(T value) => Reports.Add(value);
    }

    private static EditRequest Edit(TempDir dir) => new()
    {
        Input = TestPaths.Golden("fill-tiny-image.png"),
        Output = dir.File("edited.png"),
        Weights = TestPaths.Golden("flux-tiny.safetensors"),
        Vae = TestPaths.Golden("vae-tiny.safetensors"),
        Text = new TextEncoderSettings { TextEmbeddings = FillGolden.WriteTextEmbeddings(dir) },
        Steps = 3,
        Seed = 5,
    };

    [Fact]
    public void AnEditReportsLoadingAndEveryStepAndWritesTheImage()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        using var backend = new CpuBackend();
        var progress = new Recorder<StageProgress>();

        var result = ImageEditor.Edit(Edit(dir), backend, progress: progress);

        var input = ImageFile.LoadRgb(TestPaths.Golden("fill-tiny-image.png"));
        result.Image.Shape.ShouldBe(input.Shape);
        ImageFile.LoadRgb(dir.File("edited.png")).Shape.ShouldBe(input.Shape);
        result.Seed.ShouldBe(5);
        progress.Reports.Where(r => r.Stage == "denoising").Select(r => r.Done).ShouldBe(new[] { 1, 2, 3 });
        var transformerLoad = progress.Reports.Where(r => r.Stage == "loading transformer").ToList();
        transformerLoad.ShouldNotBeEmpty();
        transformerLoad[^1].Done.ShouldBe(transformerLoad[^1].Total);
    }

    [Fact]
    public void ACancelledEditStopsBeforeWritingAnything()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        using var backend = new CpuBackend();
        using var cancellation = new CancellationTokenSource();
        // Cancelled during the second sampling step's report: the edit must not finish.
        var progress = new CancelAt(cancellation, stage: "denoising", done: 2);

        Should.Throw<OperationCanceledException>(() => ImageEditor.Edit(Edit(dir), backend, progress: progress, cancellation: cancellation.Token));
        File.Exists(dir.File("edited.png")).ShouldBeFalse();
    }

    [Fact]
    public void TrainingReportsEveryStepAndACancelledRunResumesToTheSameLora()
    {
        using var dir = new TempDir();
        using var backend = new CpuBackend();
        TrainRequest Request(string output) => new()
        {
            Weights = TestPaths.Golden("flux-tiny.safetensors"),
            Vae = TestPaths.Golden("vae-tiny.safetensors"),
            Data = Directory.Exists(dir.File("data")) ? dir.File("data") : TrainCommandTests.Data(dir),
            Text = new TextEncoderSettings { TextEmbeddings = FillGolden.WriteTextEmbeddings(dir) },
            Output = dir.File(output),
            Steps = 6,
            Rank = 4,
            LearningRate = 3e-3,
            Resolution = 64,
            CheckpointEvery = 100,
        };

        var progress = new Recorder<TrainProgress>();
        var whole = LoraTraining.Train(Request("whole"), backend, progress: progress);
        progress.Reports.Select(r => r.Step).ShouldBe(Enumerable.Range(1, 6));
        progress.Reports.ShouldAllBe(r => r.TotalSteps == 6 && double.IsFinite(r.Loss));
        whole.LoraPath.ShouldNotBeNull();
        whole.Checkpoints.ShouldHaveSingleItem().ShouldEndWith("checkpoint-000006.safetensors");

        // Stopped after step 4: a checkpoint of step 4 is saved before the cancellation surfaces.
        using var cancellation = new CancellationTokenSource();
        var stopAfterFour = new CancelAfterStep(cancellation, 4);
        Should.Throw<OperationCanceledException>(() =>
            LoraTraining.Train(Request("split"), backend, progress: stopAfterFour, cancellation: cancellation.Token));
        string saved = Path.Combine(dir.File("split"), "checkpoint-000004.safetensors");
        File.Exists(saved).ShouldBeTrue();
        File.Exists(Request("split").LoraPath).ShouldBeFalse();

        var resumed = LoraTraining.Train(Request("split") with { Resume = saved }, backend);
        resumed.Steps.ShouldBe(6);
        using var expected = SafeTensorsFile.Open(whole.LoraPath!);
        using var actual = SafeTensorsFile.Open(resumed.LoraPath!);
        foreach (var tensor in expected.Tensors)
            actual.ReadFloat32(tensor.Name).Data.ShouldBe(expected.ReadFloat32(tensor.Name).Data, $"{tensor.Name} after resuming");
    }

    private sealed class CancelAt(CancellationTokenSource source, string stage, int done) : IProgress<StageProgress>
    {
        public void Report(StageProgress value)
        {
            if (value.Stage == stage && value.Done == done) source.Cancel();
        }
    }

    private sealed class CancelAfterStep(CancellationTokenSource source, int step) : IProgress<TrainProgress>
    {
        public void Report(TrainProgress value)
        {
            if (value.Step == step) source.Cancel();
        }
    }
}
