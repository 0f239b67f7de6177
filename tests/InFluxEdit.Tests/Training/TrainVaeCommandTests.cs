using InFluxEdit.Cli.Commands;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>`influx-cli train-vae`: a reconstruction run writes weights the VAE loads, and resuming its checkpoint (periodic or a stop's) continues bit for bit.</summary>
public class TrainVaeCommandTests
{
    private static TrainVaeOptions Options(string images, string output, int steps) => new()
    {
        Device = "cpu",
        Model = "flux-vae-tiny",
        Weights = TestPaths.Golden("vae-tiny.safetensors"),
        Images = images,
        Output = output,
        Size = 16,
        Batch = 2,
        Steps = steps,
        LearningRate = 2e-3,
        CheckpointEvery = 2,
        LogEvery = 1,
        Seed = 4,
    };

    /// <summary>A log that requests the stop when a line starting with <paramref name="prefix"/> is written.</summary>
    private sealed class CancelAtLine(string prefix, CancellationTokenSource cancel) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.StartsWith(prefix, StringComparison.Ordinal) == true) cancel.Cancel();
        }
    }

    [Fact]
    public void ResumingContinuesExactlyAndTheWeightsLoad()
    {
        string root = Directory.CreateTempSubdirectory("influx-train-vae-").FullName;
        try
        {
            string images = Directory.CreateDirectory(Path.Combine(root, "images")).FullName;
            var random = new Random(8);
            for (int n = 0; n < 3; n++)
            {
                // Not square, not the training size: centre-cropped, then resized.
                var image = new HostTensor(1, 3, 20, 28);
                for (int i = 0; i < image.Data.Length; i++) image.Data[i] = (float)Math.Sin(i * (0.01 + 0.02 * n) + random.NextDouble() * 0.2);
                ImageFile.SaveRgb(image, Path.Combine(images, $"img{n}.png"));
            }
            string straight = Path.Combine(root, "straight"), resumed = Path.Combine(root, "resumed");
            TrainVaeCommand.Run(Options(images, straight, 4)).ShouldBe(0);
            TrainVaeCommand.Run(Options(images, resumed, 2)).ShouldBe(0);
            var second = Options(images, resumed, 4);
            second.Resume = Path.Combine(resumed, "checkpoint.safetensors");
            TrainVaeCommand.Run(second).ShouldBe(0);

            byte[] a = File.ReadAllBytes(Path.Combine(straight, "flux-vae-tiny.safetensors"));
            byte[] b = File.ReadAllBytes(Path.Combine(resumed, "flux-vae-tiny.safetensors"));
            b.ShouldBe(a);

            // Stopped after step 3, between checkpoints: the stop saves that step, and resuming it gives the same weights.
            string stoppedFolder = Path.Combine(root, "stopped");
            using (var cancel = new CancellationTokenSource())
            using (var cpu = new InFluxEdit.Runtime.Backends.Cpu.CpuBackend())
            {
                var log = new CancelAtLine("step 3/", cancel);
                var stopped = Should.Throw<TrainingStoppedException>(() =>
                    AutoencoderTraining.Train(TrainVaeCommand.Request(Options(images, stoppedFolder, 4)), cpu, log, cancel.Token));
                stopped.Step.ShouldBe(3);
                var rest = Options(images, stoppedFolder, 4);
                rest.Resume = stopped.Checkpoint;
                TrainVaeCommand.Run(rest).ShouldBe(0);
            }
            File.ReadAllBytes(Path.Combine(stoppedFolder, "flux-vae-tiny.safetensors")).ShouldBe(a);

            // The trained weights differ from the start and load as the model's checkpoint.
            using var trained = SafeTensorsFile.Open(Path.Combine(straight, "flux-vae-tiny.safetensors"));
            using var start = SafeTensorsFile.Open(TestPaths.Golden("vae-tiny.safetensors"));
            trained.ReadFloat32("decoder.conv_out.bias").Data.ShouldNotBe(start.ReadFloat32("decoder.conv_out.bias").Data);
            using var backend = new InFluxEdit.Runtime.Backends.Cpu.CpuBackend();
            var weights = WeightLoader.Load(FluxVaeTiny.Descriptor.Parameters, new[] { trained }, backend);
            weights.Count.ShouldBe(FluxVaeTiny.Descriptor.Parameters.Count);
            foreach (var w in weights.Values) w.Dispose();

            // From a fresh initialisation (no --weights) it runs too.
            var fresh = Options(images, Path.Combine(root, "fresh"), 1);
            fresh.Weights = null;
            TrainVaeCommand.Run(fresh).ShouldBe(0);
            File.Exists(Path.Combine(root, "fresh", "flux-vae-tiny.safetensors")).ShouldBeTrue();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
