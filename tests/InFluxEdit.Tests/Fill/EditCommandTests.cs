using InFluxEdit.Cli.Commands;
using InFluxEdit.Cli.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace InFluxEdit.Tests.Fill;

/// <summary>
/// influx-cli edit on the golden tiny transformer and VAE. The tests that produce an image need the compiled
/// FLUX VAE and fail until it is in the build; the error tests stop before any model loads.
/// </summary>
public class EditCommandTests
{
    private static EditOptions Options(TempDir dir, EditMethod method, string? input = null, string? mask = null) => new()
    {
        Weights = TestPaths.Golden("flux-tiny.safetensors"),
        Vae = TestPaths.Golden("vae-tiny.safetensors"),
        Input = input ?? TestPaths.Golden("fill-tiny-image.png"),
        Mask = mask ?? (method == EditMethod.Fill ? TestPaths.Golden("fill-tiny-mask.png") : null),
        Method = method,
        TextEmbeddings = FillGolden.WriteTextEmbeddings(dir),
        Steps = 2,
        Seed = 1,
        Output = dir.File("out.png"),
        Device = "cpu",
    };

    [Theory]
    [InlineData(EditMethod.Fill)]
    [InlineData(EditMethod.Channel)]
    [InlineData(EditMethod.Concat)]
    public void EachMethodWritesAnImageOfTheInputsSize(EditMethod method)
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var options = Options(dir, method);

        EditCommand.Run(options, TextWriter.Null, ModelCatalog.All).ShouldBe(0);

        using var output = Image.Load<Rgb24>(options.Output);
        (output.Width, output.Height).ShouldBe((64, 48));
    }

    [Theory]
    [InlineData(SizingMode.Resize)]
    [InlineData(SizingMode.Pad)]
    public void AnInputThatIsNotAMultipleOf16ComesBackAtItsOwnSize(SizingMode fit)
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        string input = dir.File("odd.png");
        using (var image = Image.Load<Rgb24>(TestPaths.Golden("fill-tiny-image.png")))
        {
            image.Mutate(x => x.Crop(new Rectangle(3, 2, 53, 37)));
            image.SaveAsPng(input);
        }
        var options = Options(dir, EditMethod.Channel, input);
        options.Fit = fit;
        var log = new StringWriter();

        EditCommand.Run(options, log, ModelCatalog.All).ShouldBe(0);

        using var output = Image.Load<Rgb24>(options.Output);
        (output.Width, output.Height).ShouldBe((53, 37));
        // 53×37 is 3.3×2.3 tokens: resizing rounds to 3×2, padding goes up to 4×3.
        string planned = fit == SizingMode.Pad ? "64×48" : "48×32";
        log.ToString().ShouldContain($"53×37 to {planned}");
    }

    [Fact]
    public void AnUnreadableInputIsNamed()
    {
        using var dir = new TempDir();
        string input = dir.File("broken.png");
        File.WriteAllText(input, "not an image");
        Should.Throw<InvalidDataException>(() => EditCommand.Run(Options(dir, EditMethod.Channel, input), TextWriter.Null, ModelCatalog.All))
            .Message.ShouldContain(input);
    }

    [Fact]
    public void AMaskOfAnotherSizeIsRefusedWithBothSizes()
    {
        using var dir = new TempDir();
        string mask = dir.File("small-mask.png");
        using (var image = new Image<L8>(32, 32)) image.SaveAsPng(mask);
        Should.Throw<ArgumentException>(() => EditCommand.Run(Options(dir, EditMethod.Fill, mask: mask), TextWriter.Null, ModelCatalog.All))
            .Message.ShouldSatisfyAllConditions(m => m.ShouldContain("32×32"), m => m.ShouldContain("64×48"), m => m.ShouldContain(mask));
    }

    [Fact]
    public void AOnePixelImageIsRefused()
    {
        using var dir = new TempDir();
        string input = dir.File("dot.png");
        using (var image = new Image<Rgb24>(1, 1)) image.SaveAsPng(input);
        Should.Throw<ArgumentException>(() => EditCommand.Run(Options(dir, EditMethod.Channel, input), TextWriter.Null, ModelCatalog.All))
            .Message.ShouldContain("1×1");
    }

    [Fact]
    public void FillWithoutAMaskIsRefused()
    {
        using var dir = new TempDir();
        var options = Options(dir, EditMethod.Fill);
        options.Mask = null;
        Should.Throw<ArgumentException>(() => EditCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message.ShouldContain("--mask");
    }

    [Fact]
    public void TextEmbeddingsOfTheWrongWidthAreRefusedWithTheNeededShape()
    {
        using var dir = new TempDir();
        var options = Options(dir, EditMethod.Channel);
        options.TextEmbeddings = dir.File("wrong.safetensors");
        SafeTensorsWriter.Write(options.TextEmbeddings, new Dictionary<string, HostTensor>
        {
            ["txt"] = new HostTensor(1, 7, 40),
            ["vec"] = new HostTensor(1, 32),
        });
        Should.Throw<InvalidDataException>(() => EditCommand.Run(options, TextWriter.Null, ModelCatalog.All))
            .Message.ShouldSatisfyAllConditions(m => m.ShouldContain("[1, 7, 40]"), m => m.ShouldContain("[1, L, 48]"));
    }

    [Fact]
    public void TextEmbeddingsWithoutVecAreRefused()
    {
        using var dir = new TempDir();
        var options = Options(dir, EditMethod.Channel);
        options.TextEmbeddings = dir.File("no-vec.safetensors");
        SafeTensorsWriter.Write(options.TextEmbeddings, new Dictionary<string, HostTensor> { ["txt"] = new HostTensor(1, 7, 48) });
        Should.Throw<InvalidDataException>(() => EditCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message.ShouldContain("'vec'");
    }

    [Fact]
    public void WithoutACompiledVaeTheCommandSaysSo()
    {
        using var dir = new TempDir();
        var withoutVae = ModelCatalog.All.Where(m => m.Descriptor.Family != VaeCodec.Family).ToList();
        Should.Throw<MissingModelFamilyException>(() => EditCommand.Run(Options(dir, EditMethod.Channel), TextWriter.Null, withoutVae))
            .Message.ShouldContain("flux-vae");
    }
}
