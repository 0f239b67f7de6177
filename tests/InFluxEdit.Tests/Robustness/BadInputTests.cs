using System.Buffers.Binary;
using InFluxEdit.Cli;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Parity;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.IO;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Tests.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Robustness;

/// <summary>
/// The bad inputs of issue 15, each ending in one actionable line and exit code 2 (through Program.Main where that is
/// cheap), never a crash, a wrong result or a lost file. One class: Main's tests swap the process's Console.Error.
/// </summary>
[Collection(ProcessConsoleCollection.Name)]
public class BadInputTests
{
    internal static (int Code, string Error) RunCli(params string[] args)
    {
        var error = new StringWriter();
        var previous = System.Console.Error;
        System.Console.SetError(error);
        try
        {
            return (Program.Main(args), error.ToString());
        }
        finally
        {
            System.Console.SetError(previous);
        }
    }

    internal static string OneLine(string error)
    {
        error.TrimEnd().Split('\n').Length.ShouldBe(1, error);
        error.ShouldStartWith("error: ");
        error.ShouldNotContain("   at ");
        return error;
    }

    [Fact]
    public void AFolderGivenAsACheckpointIsSaidToBeAFolder()
    {
        using var dir = new TempDir();
        var (code, error) = RunCli("inspect", dir.Path);
        code.ShouldBe(2);
        OneLine(error).ShouldContain($"weights file '{dir.Path}' is a folder; give a file");
        Should.Throw<SafeTensorsException>(() => SafeTensorsFile.Open(dir.Path)).Message.ShouldContain(dir.Path);
    }

    [Fact]
    public void VerbosePrintsTheStackTrace()
    {
        using var dir = new TempDir();
        var (code, error) = RunCli("inspect", dir.Path, "--verbose");
        code.ShouldBe(2);
        error.ShouldContain($"weights file '{dir.Path}' is a folder; give a file");
        error.ShouldContain("   at ");
    }

    [Fact]
    public void ANegativeCountIsRefusedAndNothingIsWritten()
    {
        using var dir = new TempDir();
        var (code, error) = RunCli("dataset", "circles", "--count", "-3", "--held-out", "5", "--out", dir.File("circles"));
        code.ShouldBe(2);
        OneLine(error).ShouldContain("--count must be at least 1 (got -3)");
        Directory.Exists(dir.File("circles")).ShouldBeFalse();
    }

    [Fact]
    public void AFileGivenAsTheOutputFolderIsSaidToBeAFile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("taken"), "x");
        var (code, error) = RunCli("dataset", "circles", "--count", "2", "--out", dir.File("taken"));
        code.ShouldBe(2);
        OneLine(error).ShouldContain($"--out {dir.File("taken")} is a file; give a folder");
        File.ReadAllText(dir.File("taken")).ShouldBe("x");
    }

    [Fact]
    public void NaNAlphaIsRefusedBeforeTraining()
    {
        using var dir = new TempDir();
        var (code, error) = RunCli("train", "--weights", TestPaths.Golden("flux-tiny.safetensors"), "--vae", TestPaths.Golden("vae-tiny.safetensors"),
            "--data", dir.Path, "--output", dir.File("out"), "--alpha", "NaN", "--device", "cpu");
        code.ShouldBe(2);
        OneLine(error).ShouldContain("--alpha must be a positive number; got NaN");
        Directory.Exists(dir.File("out")).ShouldBeFalse();
    }

    [Fact]
    public void AFileGivenAsFluxDirIsSaidToBeAFile()
    {
        Should.Throw<PathKindException>(() => FluxModelFolder.Transformer(TestPaths.Golden("flux-tiny.safetensors")))
            .Message.ShouldContain("--flux-dir " + TestPaths.Golden("flux-tiny.safetensors") + " is a file");
    }

    [Fact]
    public void AFolderGivenAsAnImageIsSaidToBeAFolder()
    {
        using var dir = new TempDir();
        Should.Throw<PathKindException>(() => ImageFile.LoadRgb(dir.Path)).Message.ShouldContain("is a folder");
    }

    [Fact]
    public void AManifestThatIsAnArrayIsNamedAsTheWrongKindOfFile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("manifest.json"), "[1, 2]");
        Should.Throw<InvalidDataException>(() => GoldenManifest.Load(dir.Path)).Message.ShouldContain("must be a JSON object with a \"cases\" object");
        File.WriteAllText(dir.File(FluxModelFolder.ToyManifestFile), "[]");
        Should.Throw<InvalidDataException>(() => FluxModelFolder.ReadToySettings(dir.Path)).Message.ShouldContain("holds a JSON array, not the object");
    }

    /// <summary>A PNG of a few dozen bytes whose header claims <paramref name="width"/>×<paramref name="height"/> (no pixel data follows).</summary>
    private static byte[] HugePngHeader(int width, int height)
    {
        var png = new List<byte>(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A });
        void Chunk(string type, byte[] data)
        {
            var length = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(length, data.Length);
            png.AddRange(length);
            byte[] typed = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            png.AddRange(typed);
            var crc = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(typed));
            png.AddRange(crc);
        }
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 8; // bit depth
        header[9] = 2; // RGB
        Chunk("IHDR", header);
        Chunk("IDAT", new byte[] { 0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01 });
        Chunk("IEND", []);
        return png.ToArray();
    }

    /// <summary>PNG's CRC-32 (ISO 3309, polynomial 0xEDB88320), bit by bit as the PNG specification's sample code.</summary>
    private static uint Crc32(byte[] data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return crc ^ 0xFFFFFFFF;
    }

    [Fact]
    public void ATinyPngClaimingAHugeImageIsRefusedBeforeDecoding()
    {
        using var dir = new TempDir();
        string path = dir.File("bomb.png");
        File.WriteAllBytes(path, HugePngHeader(8192, 8192));
        new FileInfo(path).Length.ShouldBeLessThan(100);
        var (code, error) = RunCli("edit", "--input", path, "--weights", TestPaths.Golden("flux-tiny.safetensors"), "--vae", TestPaths.Golden("vae-tiny.safetensors"),
            "--text-embeddings", FillGolden.WriteTextEmbeddings(dir), "--output", dir.File("out.png"), "--device", "cpu", "--method", "channel");
        code.ShouldBe(2, error);
        OneLine(error).ShouldContain("is 8192×8192, more than the 16.8 million pixels (4096×4096)");
    }

    [Fact]
    public void ATensorPastTheLargestCpuBufferIsRefusedWithoutAllocating()
    {
        using var backend = new CpuBackend();
        Should.Throw<InsufficientMemoryException>(() => backend.Allocate([1 << 16, 1 << 16])).Message.ShouldContain("--resolution");
        backend.AllocatedBytes.ShouldBe(0);
    }

    [Fact]
    public void AResolutionTheMachineCannotHoldIsRefusedBeforeAllocating()
    {
        using var dir = new TempDir();
        string data = Training.TrainCommandTests.Data(dir);
        // 16384² pixels: hundreds of GB for the autoencoder alone, on any machine that runs the tests.
        var (code, error) = RunCli("train", "--weights", TestPaths.Golden("flux-tiny.safetensors"), "--vae", TestPaths.Golden("vae-tiny.safetensors"),
            "--data", data, "--text-embeddings", FillGolden.WriteTextEmbeddings(dir), "--output", dir.File("out"), "--resolution", "16384", "--device", "cpu");
        code.ShouldBe(2, error);
        OneLine(error).ShouldContain("needs about");
        error.ShouldContain("GB free: lower --resolution");
        Directory.Exists(dir.File("out")).ShouldBeFalse();
    }

    [Fact]
    public void TheEstimateGrowsWithTokensAndRecomputingShrinksIt()
    {
        var model = FluxFillTiny.Descriptor;
        long keep = MemoryEstimate.TrainingActivationsPerToken(model, recompute: false);
        long recompute = MemoryEstimate.TrainingActivationsPerToken(model, recompute: true);
        // Every linear layer's input and output per token, summed here independently from the parameter table.
        keep.ShouldBe(model.Parameters.Where(p => p.Shape.Length == 2).Sum(p => 4L * (p.Shape[0] + p.Shape[1])));
        recompute.ShouldBeLessThan(keep);
        Should.NotThrow(() => MemoryEstimate.Require("x", [new MemoryNeed("a", 10)], 10, "advice"));
        Should.Throw<InsufficientMemoryException>(() => MemoryEstimate.Require("training", [new MemoryNeed("weights", 38_000_000_000)], 23_000_000_000, "lower --resolution"))
            .Message.ShouldBe("training needs about 38 GB (weights 38 GB); this machine has 23 GB free: lower --resolution");
    }

    [Fact]
    public void ADamagedCheckpointRecordNamesTheKeyAndTheFile()
    {
        using var dir = new TempDir();
        var parameters = new Dictionary<string, HostTensor> { ["a"] = new HostTensor(new[] { 2 }, new[] { 1f, 2f }) };
        var optimizer = new OptimizerState("adamw", new Dictionary<string, HostTensor>(), new Dictionary<string, double>());
        var good = new TrainingCheckpointInfo(3, 0, new TrainingRandom(1).SaveState(), "0", "channel", 4, 4.0, ["x"], "m");
        foreach (var (info, key) in new[] { (good with { RandomState = "xoshiro256**:zz:1:2:3" }, "rng_state"), (good with { Step = -4 }, "step"), (good with { DataOrder = "0,x" }, "data_order") })
        {
            string path = dir.File(key + ".safetensors");
            TrainingCheckpoint.Save(path, parameters, optimizer, info);
            var message = Should.Throw<InvalidDataException>(() => TrainingCheckpoint.Load(path)).Message;
            message.ShouldContain(path);
            message.ShouldContain($"'{key}'");
            message.ShouldContain("resume from another one");
        }
    }

    [Fact]
    public void MessagesAreOneShortPrintableLineAndUnknownExceptionsAreBugs()
    {
        ErrorReport.Format(new InvalidDataException("merges.txt line 2 is '\u001b[31m\0\u0007'"), verbose: false)
            .ShouldBe("error: merges.txt line 2 is '\\x1b[31m\\x00\\x07'");
        string sixty = string.Join("\n", Enumerable.Range(1, 60).Select(i => $"line {i}"));
        var shortened = ErrorReport.Format(new IOException(sixty), verbose: false).Split('\n');
        shortened.Length.ShouldBe(9);
        shortened[^1].ShouldBe("… 52 more lines (--verbose shows them all)");
        ErrorReport.Format(new IOException(sixty), verbose: true).Split('\n').Length.ShouldBe(60);
        ErrorReport.Format(new TrainingDivergedException("training diverged: lower the learning rate"), false).ShouldBe("error: training diverged: lower the learning rate");
        ErrorReport.Format(new ArgumentOutOfRangeException("step", "steps count from 0"), false).ShouldBe("error: steps count from 0");
        ErrorReport.Format(new NullReferenceException("oops"), false).ShouldContain("internal error (NullReferenceException): oops — this is a bug");
    }
}
