using System.Diagnostics;
using System.Runtime.InteropServices;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Tests.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Robustness;

/// <summary>
/// Ctrl-C and SIGTERM end a training run after its step with a checkpoint, say how to resume, exit 130 / 143, and the
/// resumed run ends where an uninterrupted one does; NaN-only runs write nothing.
/// </summary>
public class GracefulStopTests
{
    private static TrainOptions Options(TempDir dir, string output, int steps, string? weights = null)
    {
        var options = Training.TrainCommandTests.Options(dir, output, EditMethod.Channel, steps);
        options.Weights = weights ?? options.Weights;
        return options;
    }

    /// <summary>A log that requests the stop when the run prints its first progress line, as a user pressing Ctrl-C then would.</summary>
    private sealed class StopAtFirstProgressLine(StopSignal stop) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value != null && value.StartsWith("step ", StringComparison.Ordinal)) stop.Request(PosixSignal.SIGINT);
        }
    }

    private static void ShouldHoldTheSameAdapters(string expected, string actual)
    {
        using var a = SafeTensorsFile.Open(expected);
        using var b = SafeTensorsFile.Open(actual);
        b.Tensors.Select(t => t.Name).ShouldBe(a.Tensors.Select(t => t.Name));
        foreach (var tensor in a.Tensors) b.ReadFloat32(tensor.Name).Data.ShouldBe(a.ReadFloat32(tensor.Name).Data, tensor.Name);
    }

    [Fact]
    public void AStoppedRunCheckpointsSaysHowToResumeAndResumesExactly()
    {
        using var dir = new TempDir();
        using var stop = StopSignal.Manual();
        var log = new StopAtFirstProgressLine(stop);
        TrainCommand.Run(Options(dir, "split", 3), log, ModelCatalog.All, stop).ShouldBe(130, log.ToString());
        string checkpoint = dir.File("split/checkpoint-000001.safetensors");
        log.ToString().ShouldContain($"stopped by SIGINT at step 1 of 3; to continue, run the same command with --resume {checkpoint}");
        File.Exists(TrainCommand.LoraPath(Options(dir, "split", 3))).ShouldBeFalse();
        File.Exists(dir.File($"split/{RunFolder.LockFileName}")).ShouldBeFalse();

        // Without --resume the folder is another run's: refused, nothing replaced.
        Should.Throw<RunFolderInUseException>(() => TrainCommand.Run(Options(dir, "split", 3), TextWriter.Null, ModelCatalog.All))
            .Message.ShouldContain("--resume " + checkpoint);

        var resumed = Options(dir, "split", 3);
        resumed.Resume = checkpoint;
        TrainCommand.Run(resumed, TextWriter.Null, ModelCatalog.All, StopSignal.Manual()).ShouldBe(0);
        TrainCommand.Run(Options(dir, "whole", 3), TextWriter.Null, ModelCatalog.All, StopSignal.Manual()).ShouldBe(0);
        ShouldHoldTheSameAdapters(dir.File("whole/lora-channel-kohya.safetensors"), dir.File("split/lora-channel-kohya.safetensors"));
    }

    [Fact]
    public void ARunOnNaNWeightsWritesNoLoraAndNoCheckpoint()
    {
        using var dir = new TempDir();
        string weights = dir.File("nan.safetensors");
        using (var golden = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors")))
        {
            var tensors = golden.Tensors.ToDictionary(t => t.Name, t => golden.ReadFloat32(t.Name));
            Array.Fill(tensors["final_layer.linear.weight"].Data, float.NaN);
            SafeTensorsWriter.Write(weights, tensors);
        }
        var options = Options(dir, "out", 2, weights);
        Should.Throw<TrainingDivergedException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All, StopSignal.Manual()))
            .Message.ShouldContain("learned nothing: all 2 steps");
        Directory.EnumerateFiles(dir.File("out"), "*.safetensors").ShouldBeEmpty();
    }

    public static TheoryData<string, int> Signals => new() { { "INT", 130 }, { "TERM", 143 } };

    [Theory]
    [MemberData(nameof(Signals))]
    public void TheCliStopsOnASignalAfterTheStepWithACheckpoint(string signal, int exitCode)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        using var dir = new TempDir();
        var options = Options(dir, "out", 1_000_000);
        string cli = Path.Combine(AppContext.BaseDirectory, "influx-cli.dll");
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in new[] { cli, "train", "--weights", options.Weights!, "--vae", options.Vae!, "--data", options.Data!, "--text-embeddings", options.TextEmbeddings!,
                     "--output", options.Output, "--steps", "1000000", "--rank", "4", "--resolution", "64", "--checkpoint-every", "1000000", "--device", "cpu" })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        var progress = new ManualResetEventSlim();
        process.OutputDataReceived += (_, e) =>
        {
            lock (output) output.AppendLine(e.Data);
            if (e.Data?.StartsWith("step ", StringComparison.Ordinal) == true) progress.Set();
        };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            progress.Wait(TimeSpan.FromSeconds(60)).ShouldBeTrue(output.ToString());
            Process.Start("kill", ["-" + signal, process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            process.WaitForExit(60_000).ShouldBeTrue(output.ToString());
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
        process.WaitForExit();
        string log;
        lock (output) log = output.ToString();
        process.ExitCode.ShouldBe(exitCode, log);
        var checkpoint = Directory.EnumerateFiles(options.Output, "checkpoint-*.safetensors").ShouldHaveSingleItem();
        log.ShouldContain($"to continue, run the same command with --resume {checkpoint}");
        int step = TrainingCheckpoint.Load(checkpoint).Info.Step;
        step.ShouldBeGreaterThan(0);
        File.Exists(Path.Combine(options.Output, RunFolder.LockFileName)).ShouldBeFalse();
    }
}
