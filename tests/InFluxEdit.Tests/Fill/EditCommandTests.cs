using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
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
    public void LoraInBothFormatsEditsLikeTheMergedCheckpoint()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var random = new Random(11);
        HostTensor Random(params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5) * 0.3f;
            return t;
        }
        // One adapter on the fused qkv of block 0, once as kohya (fused) and once as diffusers' three row blocks.
        var down = Random(4, 64);
        var up = Random(192, 4);
        SafeTensorsWriter.Write(dir.File("kohya.safetensors"), new Dictionary<string, HostTensor>
        {
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = down,
            ["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] = up,
            ["lora_unet_double_blocks_0_img_attn_qkv.alpha"] = new HostTensor(Array.Empty<int>(), new[] { 4f }),
        });
        var peft = new Dictionary<string, HostTensor>();
        string[] parts = { "to_q", "to_k", "to_v" };
        for (int p = 0; p < 3; p++)
        {
            peft[$"transformer.transformer_blocks.0.attn.{parts[p]}.lora_A.weight"] = down;
            peft[$"transformer.transformer_blocks.0.attn.{parts[p]}.lora_B.weight"] =
                new HostTensor(new[] { 64, 4 }, up.Data.AsSpan(p * 64 * 4, 64 * 4).ToArray());
        }
        SafeTensorsWriter.Write(dir.File("peft.safetensors"), peft);

        // The merged checkpoint, by hand: W += B·A (alpha = rank).
        Dictionary<string, HostTensor> merged;
        using (var golden = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors")))
            merged = golden.Tensors.ToDictionary(t => t.Name, t => golden.ReadFloat32(t.Name));
        var qkv = merged["double_blocks.0.img_attn.qkv.weight"];
        for (int r = 0; r < 192; r++)
            for (int c = 0; c < 64; c++)
            {
                double sum = 0;
                for (int k = 0; k < 4; k++) sum += (double)up.Data[r * 4 + k] * down.Data[k * 64 + c];
                qkv.Data[r * 64 + c] += (float)sum;
            }
        SafeTensorsWriter.Write(dir.File("merged.safetensors"), merged);

        byte[] Edit(string name, Action<EditOptions> configure)
        {
            var options = Options(dir, EditMethod.Channel);
            options.Output = dir.File(name + ".png");
            configure(options);
            EditCommand.Run(options, TextWriter.Null, ModelCatalog.All).ShouldBe(0);
            using var image = Image.Load<Rgb24>(options.Output);
            var pixels = new byte[image.Width * image.Height * 3];
            image.CopyPixelDataTo(pixels);
            return pixels;
        }
        var byMerging = Edit("merged", o => o.Weights = dir.File("merged.safetensors"));
        var byKohya = Edit("kohya", o => o.Loras = new[] { dir.File("kohya.safetensors") });
        var byPeft = Edit("peft", o => o.Loras = new[] { dir.File("peft.safetensors") });
        var plain = Edit("plain", _ => { });

        // One level of difference allowed: float32 sums in another order can cross a truncation boundary.
        byKohya.Zip(byMerging, (a, b) => Math.Abs(a - b)).Max().ShouldBeLessThanOrEqualTo(1);
        byPeft.Zip(byMerging, (a, b) => Math.Abs(a - b)).Max().ShouldBeLessThanOrEqualTo(1);
        plain.Zip(byMerging, (a, b) => Math.Abs(a - b)).Max().ShouldBeGreaterThan(1, "the LoRA must change the edit");
    }

    [Fact]
    public void AnImageLargerThanTheVaeTileIsEditedInTilesAndTheLogSaysSo()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var options = Options(dir, EditMethod.Concat);
        options.VaeTile = "64";
        var log = new StringWriter();

        EditCommand.Run(options, log, ModelCatalog.All).ShouldBe(0);

        // The diptych is 128×48: 16 latent columns take three 8-wide tiles overlapping by at least 2; 6 rows fit one.
        log.ToString().ShouldContain("vae: encodes and decodes the 128×48 image in 3×1 tiles of at most 64 px");
        using var output = Image.Load<Rgb24>(options.Output);
        (output.Width, output.Height).ShouldBe((64, 48));
    }

    [Fact]
    public void ABadVaeTileIsRefusedBeforeAnyModelLoads()
    {
        using var dir = new TempDir();
        var options = Options(dir, EditMethod.Channel);
        options.VaeTile = "tiny";
        options.Weights = dir.File("absent.safetensors");
        var error = Should.Throw<ArgumentException>(() => EditCommand.Run(options, TextWriter.Null, ModelCatalog.All));
        error.Message.ShouldStartWith("--vae-tile 'tiny'");
        error.Message.ShouldNotContain('\n');
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
