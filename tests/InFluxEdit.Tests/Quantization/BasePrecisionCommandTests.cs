using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Tests.Fill;
using InFluxEdit.Tests.Training;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>--base-precision through the commands: a LoRA (and img_in) trains over a base held quantized; what cannot work is refused up front.</summary>
public class BasePrecisionCommandTests
{
    [Fact]
    public void ALoraAndImgInTrainOverABaseHeldInQ4K()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 24);
        options.BasePrecision = "q4_k";
        var log = new StringWriter();
        TrainCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
        var (before, after) = TrainCommandTests.Fit(log.ToString());
        after.ShouldBeLessThan(before * 0.95, log.ToString());
    }

    /// <summary>edit on a Q4_K GGUF held as the file stores it gives the image that decoding the file at load gives, byte for byte.</summary>
    [Fact]
    public void EditingFromAGgufHeldAsStoredGivesTheDecodedFilesImage()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        string gguf = dir.File("flux-tiny-q4_k.gguf");
        WeightConverter.Convert(TestPaths.Golden("flux-tiny.safetensors"), gguf, TensorFormat.Q4_K);
        byte[] Edit(string? precision, string name)
        {
            var options = new EditOptions
            {
                Weights = gguf, Vae = TestPaths.Golden("vae-tiny.safetensors"), Input = TestPaths.Golden("fill-tiny-image.png"),
                Method = EditMethod.Channel, TextEmbeddings = FillGolden.WriteTextEmbeddings(dir), Steps = 2, Seed = 1,
                Output = dir.File(name), Device = "cpu", BasePrecision = precision,
            };
            var log = new StringWriter();
            EditCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
            if (precision != null) log.ToString().ShouldContain($"held as {precision}");
            return File.ReadAllBytes(options.Output);
        }
        // The default is "keep": the file's blocks stay in memory and compute what its decoded floats compute.
        byte[] kept = Edit(null, "kept.png");
        kept.ShouldBe(Edit("f32", "decoded.png"));
        kept.ShouldBe(Edit("keep", "kept-explicitly.png"));
    }

    [Fact]
    public void FullTrainingOverAQuantizedBaseIsRefused()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 2);
        options.Full = true;
        options.TrainImgIn = false;
        options.BasePrecision = "q8_0";
        var error = Should.Throw<ArgumentException>(() => TrainCommand.Run(options, new StringWriter(), ModelCatalog.All));
        error.Message.ShouldContain("--full");
        error.Message.ShouldContain("--base-precision q8_0");
    }

    [Theory]
    [InlineData("int8")]
    [InlineData("f64")]
    public void AnUnknownPrecisionIsRefusedWithTheChoices(string value)
    {
        var error = Should.Throw<ArgumentException>(() => BasePrecision.Parse(value));
        error.Message.ShouldContain($"--base-precision '{value}'");
        error.Message.ShouldContain(BasePrecision.OptionNames);
    }

    [Theory]
    [InlineData("keep", null)]
    [InlineData("Q4_K", TensorFormat.Q4_K)]
    [InlineData("q3_k", TensorFormat.Q3_K)]
    [InlineData("q2_k", TensorFormat.Q2_K)]
    [InlineData("q5_k", TensorFormat.Q5_K)]
    [InlineData("fp8", TensorFormat.F8_E4M3)]
    [InlineData("bf16", TensorFormat.BF16)]
    public void PrecisionsParse(string value, TensorFormat? format)
    {
        BasePrecision.Parse(value)!.Format.ShouldBe(format);
        BasePrecision.Parse(null).ShouldBeNull();
    }
}
