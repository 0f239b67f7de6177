using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Tests.Fill;
using InFluxEdit.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// train --resolution 256,512,768 (issue 14), as the seed's train_influxedit.py takes it: every pair at every size,
/// each batch at one size drawn at random (its collate_fn: random.choice over args.resolution.split(',')).
/// </summary>
[Collection(ProcessConsoleCollection.Name)]
public class MultiResolutionTests
{
    [Fact]
    public void SizesAreParsedInTheOrderGiven()
    {
        TrainingResolutions.Parse("256,512,768").Sizes.ShouldBe([256, 512, 768]);
        TrainingResolutions.Parse(" 512 , 256").Sizes.ShouldBe([512, 256]);
        TrainingResolutions.Parse("64").ShouldBe((TrainingResolutions)64);
        TrainingResolutions.Parse("64,32").ToString().ShouldBe("64,32");
    }

    [Theory]
    [InlineData("256,abc", "'abc' is not a whole number of pixels")]
    [InlineData("256,", "'' is not a whole number of pixels")]
    [InlineData("-256", "'-256' is not a whole number of pixels")]
    [InlineData("256,500", "500 is not a multiple of 16 of at least 32")]
    [InlineData("16", "16 is not a multiple of 16 of at least 32")]
    [InlineData("256,512,256", "gives 256 twice")]
    public void ABadListIsRefusedNamingTheSize(string text, string message) =>
        Should.Throw<ArgumentException>(() => TrainingResolutions.Parse(text)).Message.ShouldContain(message);

    [Fact]
    public void ABadListFromTheCommandLineIsOneLineAndExitCode2()
    {
        using var dir = new TempDir();
        var (code, error) = Robustness.BadInputTests.RunCli("train", "--weights", TestPaths.Golden("flux-tiny.safetensors"),
            "--data", TrainCommandTests.Data(dir), "--output", dir.File("out"), "--resolution", "256,abc", "--device", "cpu");
        code.ShouldBe(2, error);
        Robustness.BadInputTests.OneLine(error).ShouldContain("--resolution '256,abc': 'abc' is not a whole number of pixels");
        Directory.Exists(dir.File("out")).ShouldBeFalse();
    }

    [Fact]
    public void TheMemoryCheckSizesTheLargestResolution()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 1);
        options.Resolution = "64,16384"; // 16384² pixels: hundreds of GB for the autoencoder alone
        Should.Throw<InsufficientMemoryException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message.ShouldContain("lower --resolution");
    }

    /// <summary>Three pairs of three shapes (4:3, 3:4, 3:1), random pixels, in DIR/mixed.</summary>
    private static string MixedShapes(TempDir dir)
    {
        string data = dir.File("mixed");
        var random = new TrainingRandom(5);
        foreach (string side in new[] { "source", "target" }) Directory.CreateDirectory(Path.Combine(data, side));
        foreach (var (name, width, height) in Shapes)
        {
            foreach (string side in new[] { "source", "target" })
            {
                var image = new HostTensor(1, 3, height, width);
                for (int i = 0; i < image.Data.Length; i++) image.Data[i] = (float)(2 * random.NextDouble() - 1);
                ImageFile.SaveRgb(image, Path.Combine(data, side, name + ".png"));
            }
            File.WriteAllText(Path.Combine(data, "source", name + ".txt"), "make it the target");
        }
        return data;
    }

    private static readonly (string Name, int Width, int Height)[] Shapes = [("wide", 64, 48), ("tall", 48, 64), ("strip", 96, 32)];

    private static int Down16(int side) => Math.Max(16, side / 16 * 16);

    /// <summary>
    /// The seed's size for a pair's diptych at a resolution, each half: resize_long_edge (long side to the resolution,
    /// the other int(resolution · short / long)) on the [source | target] diptych, then halved; sides then down to
    /// multiples of 16, where the seed would fail on the mask's reshape.
    /// </summary>
    private static (int Width, int Height) SeedDiptychHalf(int halfWidth, int height, int resolution)
    {
        int width = 2 * halfWidth;
        var (resizedWidth, resizedHeight) = width >= height
            ? (resolution, (int)((double)(resolution * height) / width))
            : ((int)((double)(resolution * width) / height), resolution);
        return (Down16(resizedWidth / 2), Down16(resizedHeight));
    }

    /// <summary>
    /// The aspect bucket of a W×H image at resolution R, from the rule --resolution states: of the sizes w × h with w
    /// a multiple of 16 from R/2 to 2R and h the largest multiple of 16 with w·h ≤ R² (also within R/2 to 2R), the one
    /// whose aspect is nearest the image's in log ratio (the narrowest on a tie).
    /// </summary>
    private static (int Width, int Height) AreaBucket(int width, int height, int resolution) =>
        (from w in Enumerable.Range(1, 2 * resolution / 16).Select(i => 16 * i)
         where w >= resolution / 2
         let h = resolution * resolution / w / 16 * 16
         where h >= resolution / 2 && h <= 2 * resolution
         select (w, h)).MinBy(b => Math.Abs(Math.Log((double)b.w / b.h) - Math.Log((double)width / height)));

    [Theory]
    [InlineData(EditMethod.Channel, "32,64")]
    [InlineData(EditMethod.Concat, "64,96")]
    public void EveryPairIsCachedAtEveryResolutionAsTheRuleSizesIt(EditMethod method, string resolutions)
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", method, 1);
        options.Data = MixedShapes(dir);
        options.Resolution = resolutions;
        // Concat as the seed sizes it: the diptych's long side is the resolution.
        if (method == EditMethod.Concat) options.ConcatResolution = "diptych";
        var log = new StringWriter();
        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());

        var sizes = TrainingResolutions.Parse(resolutions).Sizes;
        // The seed's collate_fn may draw any size for any batch, so every pair is needed at every size.
        var expected = (from pair in Shapes
                        from resolution in sizes
                        let bucket = method == EditMethod.Concat ? SeedDiptychHalf(pair.Width, pair.Height, resolution) : AreaBucket(pair.Width, pair.Height, resolution)
                        select $"{pair.Name}.{bucket.Width}x{bucket.Height}").ToHashSet();
        expected.Count.ShouldBe(Shapes.Length * sizes.Count); // the shapes differ at each size: every file is its own
        string methodName = method.ToString().ToLowerInvariant();
        var cached = Directory.GetFiles(dir.File("out/cache"), $"*.{methodName}.*.safetensors")
            .Select(path => Path.GetFileName(path).Split('.')).Select(parts => $"{parts[0]}.{parts[2]}").ToHashSet();
        cached.ShouldBe(expected, ignoreOrder: true);
        log.ToString().ShouldContain($"resolutions {resolutions}: every pair cached at each");
    }

    [Fact]
    public void TwoResolutionsTrainAtBothAndResumeToTheSameBytes()
    {
        using var dir = new TempDir();
        TrainOptions Run(string output, int steps, string resolution)
        {
            var options = TrainCommandTests.Options(dir, output, EditMethod.Channel, steps);
            options.Data = Directory.Exists(dir.File("mixed")) ? dir.File("mixed") : MixedShapes(dir);
            options.Resolution = resolution;
            options.BatchSize = 2; // batches of one bucket at the drawn size: a batch of the 4:3 and 3:4 pairs would not stack
            options.Accumulate = 2;
            options.ExportDType = "f32";
            return options;
        }
        var whole = Run("whole", 6, "32,64");
        TrainCommand.Run(whole, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        TrainCommand.Run(Run("split", 3, "32,64"), TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        var resumed = Run("split", 6, "32,64");
        resumed.Resume = dir.File("split/checkpoint-000003.safetensors");
        TrainCommand.Run(resumed, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        File.ReadAllBytes(TrainCommand.LoraPath(resumed)).ShouldBe(File.ReadAllBytes(TrainCommand.LoraPath(whole)));

        // Both sizes were trained: the result is neither size's alone.
        var both = TrainCommandTests.TrainAndReadLora(Run("both", 6, "32,64"));
        both.ShouldNotBeEmpty();
        foreach (string single in new[] { "32", "64" })
        {
            var alone = TrainCommandTests.TrainAndReadLora(Run("only-" + single, 6, single));
            both.Keys.Any(key => !both[key].SequenceEqual(alone[key])).ShouldBeTrue($"--resolution 32,64 trained as --resolution {single} alone");
        }
    }

    [Fact]
    public void TheHeldOutLossCoversBothSizesAndRepeatsExactly()
    {
        using var dir = new TempDir();
        string data = MixedShapes(dir), text = FillGolden.WriteTextEmbeddings(dir);
        TrainResult Train(string output, string resolution)
        {
            using var backend = new Runtime.Backends.Cpu.CpuBackend();
            return LoraTraining.Train(new TrainRequest
            {
                Weights = TestPaths.Golden("flux-tiny.safetensors"), Vae = TestPaths.Golden("vae-tiny.safetensors"), Data = data,
                Text = new InFluxEdit.Text.TextEncoderSettings { TextEmbeddings = text }, Output = dir.File(output), Steps = 2, Rank = 4, LearningRate = 3e-3,
                Resolution = TrainingResolutions.Parse(resolution), Validation = data, ValidationEdits = false, ValidationLossEvery = 2,
            }, backend);
        }
        var first = Train("first", "32,64").ValidationLosses;
        first.Select(point => point.Step).ShouldBe([0, 2]);
        Train("again", "32,64").ValidationLosses.ShouldBe(first);
        // Every pair at both sizes, not the first size's latents alone.
        Train("only-32", "32").ValidationLosses[0].Loss.ShouldNotBe(first[0].Loss);
    }

    [Fact]
    public void AResumeAtOtherResolutionsIsRefused()
    {
        using var dir = new TempDir();
        var first = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 2);
        first.Resolution = "64,32";
        TrainCommand.Run(first, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        using var checkpoint = Runtime.SafeTensors.SafeTensorsFile.Open(dir.File("out/checkpoint-000002.safetensors"));
        checkpoint.Metadata["extra.resolution"].ShouldBe("64,32");

        foreach (string other in new[] { "64", "32,64" })
        {
            var resumed = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 4);
            resumed.Resolution = other;
            resumed.Resume = dir.File("out/checkpoint-000002.safetensors");
            Should.Throw<InvalidDataException>(() => TrainCommand.Run(resumed, TextWriter.Null, ModelCatalog.All))
                .Message.ShouldContain($"was trained with --resolution 64,32; this run has --resolution {other}");
        }
    }
}
