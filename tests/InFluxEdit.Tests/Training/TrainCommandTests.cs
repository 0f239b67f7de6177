using System.Globalization;
using System.Text.RegularExpressions;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>influx-cli train on the golden tiny transformer and VAE: it learns, resumes exactly, and its LoRA edits.</summary>
public class TrainCommandTests
{
    /// <summary>One editing pair of the golden tiny images in DIR/data (source/, target/, a caption beside the source).</summary>
    internal static string Data(TempDir dir)
    {
        string data = dir.File("data");
        Directory.CreateDirectory(Path.Combine(data, "source"));
        Directory.CreateDirectory(Path.Combine(data, "target"));
        File.Copy(TestPaths.Golden("methods-tiny-source.png"), Path.Combine(data, "source", "pair.png"));
        File.Copy(TestPaths.Golden("methods-tiny-target.png"), Path.Combine(data, "target", "pair.png"));
        File.WriteAllText(Path.Combine(data, "source", "pair.txt"), "make it the target");
        return data;
    }

    internal static TrainOptions Options(TempDir dir, string output, EditMethod method, int steps) => new()
    {
        Weights = TestPaths.Golden("flux-tiny.safetensors"),
        Vae = TestPaths.Golden("vae-tiny.safetensors"),
        Data = Directory.Exists(dir.File("data")) ? dir.File("data") : Data(dir),
        Method = method,
        TextEmbeddings = FillGolden.WriteTextEmbeddings(dir),
        Output = dir.File(output),
        Steps = steps,
        Rank = 4,
        LearningRate = 3e-3,
        Resolution = "64",
        CheckpointEvery = 4,
        TrainImgIn = true,
        Device = "cpu",
    };

    /// <summary>Trains with <paramref name="options"/> (the LoRA exported as float32) and reads the LoRA back.</summary>
    internal static Dictionary<string, float[]> TrainAndReadLora(TrainOptions options)
    {
        options.ExportDType = "f32";
        var log = new StringWriter();
        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        using var file = SafeTensorsFile.Open(TrainCommand.LoraPath(options));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name).Data);
    }

    internal static (double Before, double After) Fit(string log)
    {
        var match = Regex.Match(log, @"fixed noise: ([0-9.]+) before, ([0-9.]+) after");
        match.Success.ShouldBeTrue(log);
        return (double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    [Theory]
    [InlineData(EditMethod.Channel)]
    [InlineData(EditMethod.Concat)]
    public void TrainingLowersTheLossOnItsPairs(EditMethod method)
    {
        using var dir = new TempDir();
        var log = new StringWriter();
        TrainCommand.Run(Options(dir, "out", method, 24), log, ModelCatalog.All).ShouldBe(0);

        var (before, after) = Fit(log.ToString());
        after.ShouldBeLessThan(before * 0.95, log.ToString());
        File.Exists(dir.File($"out/lora-{method.ToString().ToLowerInvariant()}-kohya.safetensors")).ShouldBeTrue();
    }

    [Fact]
    public void FillMethodTrainsAnInpaintingLoraFromImagesAndMasks()
    {
        using var dir = new TempDir();
        string data = dir.File("masked");
        Directory.CreateDirectory(Path.Combine(data, "images"));
        Directory.CreateDirectory(Path.Combine(data, "masks"));
        File.Copy(TestPaths.Golden("fill-tiny-image.png"), Path.Combine(data, "images", "scene.png"));
        File.Copy(TestPaths.Golden("fill-tiny-mask.png"), Path.Combine(data, "masks", "scene.png"));
        File.WriteAllText(Path.Combine(data, "images", "scene.txt"), "restore the scene");
        var options = Options(dir, "out", EditMethod.Fill, 24);
        options.Data = data;
        options.LossRegion = "masked";
        var log = new StringWriter();

        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0);

        var (before, after) = Fit(log.ToString());
        after.ShouldBeLessThan(before * 0.95, log.ToString());
        File.Exists(dir.File("out/lora-fill-kohya.safetensors")).ShouldBeTrue();
    }

    [Fact]
    public void FullTrainingTrainsEveryWeightAndWritesTheModelCheckpoint()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", EditMethod.Channel, 12);
        options.Full = true;
        options.TrainImgIn = false;
        options.LearningRate = 1e-3;
        var log = new StringWriter();

        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0);

        log.ToString().ShouldContain("every weight in full");
        var (before, after) = Fit(log.ToString());
        after.ShouldBeLessThan(before * 0.95, log.ToString());
        File.Exists(TrainCommand.LoraPath(options)).ShouldBeFalse();
        using var trained = SafeTensorsFile.Open(dir.File("out/flux-fill-tiny.safetensors"));
        using var original = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        trained.Tensors.Select(t => t.Name).OrderBy(n => n, StringComparer.Ordinal)
            .ShouldBe(FluxFillTiny.Descriptor.Parameters.Select(p => p.Name).OrderBy(n => n, StringComparer.Ordinal));
        // Layers outside every LoRA preset moved too: the embedders, a QK-norm scale, the final layer.
        foreach (string key in new[] { "time_in.in_layer.weight", "txt_in.bias", "double_blocks.0.img_attn.norm.query_norm.scale", "final_layer.linear.weight" })
            trained.ReadFloat32(key).Data.ShouldNotBe(original.ReadFloat32(key).Data, key);
    }

    [Fact]
    public void FillMethodNeedsImagesAndMasksFolders()
    {
        using var dir = new TempDir();
        var options = Options(dir, "out", EditMethod.Fill, 2);
        Should.Throw<IOException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All))
            .Message.ShouldContain("needs an 'images' and a 'masks' folder");
    }

    [Fact]
    public void ValidationWritesEditsAndAContactSheet()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var options = Options(dir, "out", EditMethod.Concat, 4);
        options.Validation = options.Data;
        options.ValidateEvery = 2;
        options.ValidationSteps = 2;
        TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All).ShouldBe(0);

        foreach (string step in new[] { "step-000002", "step-000004" })
        {
            File.Exists(dir.File($"out/validation/{step}/pair.png")).ShouldBeTrue(step);
            var sheet = InFluxEdit.Runtime.Images.ImageFile.LoadRgb(dir.File($"out/validation/{step}/contact-sheet.png"));
            // One row of source | target | result, each the pair's 64×48.
            sheet.Shape.ShouldBe(new[] { 1, 3, 48, 3 * 64 });
        }
    }

    [Fact]
    public void ALongValidationSetWrapsIntoColumnsWithWhiteGaps()
    {
        var rows = Enumerable.Range(0, 9).Select(i =>
        {
            var row = new HostTensor(1, 3, 10, 30);
            Array.Fill(row.Data, -1f + i / 10f);
            return row;
        }).ToList();
        var sheet = InFluxEdit.Training.ValidationSheet.Wrap(rows);
        // 9 rows → 2 columns of at most 8: 5 lines, each two (row, 4-pixel gap) pairs; the last line's missing row is white.
        sheet.Shape.ShouldBe(new[] { 1, 3, 50, 2 * (30 + 4) });
        sheet.Data[0].ShouldBe(-1f);
        sheet.Data[34].ShouldBe(-0.9f, 1e-6);
        sheet.Data[30].ShouldBe(1f);
        sheet.Data[40 * 68 + 34].ShouldBe(1f);
        InFluxEdit.Training.ValidationSheet.Wrap(rows.Take(8).ToList()).Shape.ShouldBe(new[] { 1, 3, 80, 30 });
    }

    [Fact]
    public void AResumedRunEndsWhereTheUninterruptedOneDoes()
    {
        using var dir = new TempDir();
        TrainCommand.Run(Options(dir, "whole", EditMethod.Channel, 8), TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        TrainCommand.Run(Options(dir, "split", EditMethod.Channel, 4), TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        var resumed = Options(dir, "split", EditMethod.Channel, 8);
        resumed.Resume = dir.File("split/checkpoint-000004.safetensors");
        TrainCommand.Run(resumed, TextWriter.Null, ModelCatalog.All).ShouldBe(0);

        using var whole = SafeTensorsFile.Open(dir.File("whole/lora-channel-kohya.safetensors"));
        using var split = SafeTensorsFile.Open(dir.File("split/lora-channel-kohya.safetensors"));
        whole.Tensors.Select(t => t.Name).ShouldBe(split.Tensors.Select(t => t.Name));
        foreach (var tensor in whole.Tensors)
            split.ReadFloat32(tensor.Name).Data.ShouldBe(whole.ReadFloat32(tensor.Name).Data, tensor.Name);
    }

    [Fact]
    public void TheTrainedLoraEdits()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var train = Options(dir, "out", EditMethod.Channel, 4);
        TrainCommand.Run(train, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
        var edit = new EditOptions
        {
            Weights = train.Weights,
            Vae = train.Vae,
            Input = TestPaths.Golden("methods-tiny-source.png"),
            Method = EditMethod.Channel,
            TextEmbeddings = train.TextEmbeddings,
            Steps = 2,
            Seed = 1,
            Output = dir.File("edited.png"),
            Loras = new[] { dir.File("out/lora-channel-kohya.safetensors") },
            Device = "cpu",
        };
        var log = new StringWriter();
        EditCommand.Run(edit, log, ModelCatalog.All).ShouldBe(0);
        var loraLine = log.ToString().Split('\n').Single(l => l.StartsWith("lora:", StringComparison.Ordinal));
        loraLine.ShouldContain("full-weight changes to"); // the trained img_in, as ComfyUI's .diff / .diff_b
        loraLine.ShouldContain("img_in.weight");
        loraLine.ShouldContain("img_in.bias");
        File.Exists(edit.Output).ShouldBeTrue();
    }
}
