using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using Shouldly;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace InFluxEdit.Tests.Images;

public class ImageFileTests
{
    [Fact]
    public void LoadsRgbAsNchwPixelsOver127Point5MinusOne()
    {
        using var dir = new TempDir();
        string path = dir.File("rgb.png");
        using (var image = new Image<Rgb24>(3, 2))
        {
            image[0, 0] = new Rgb24(0, 128, 255);
            image[2, 1] = new Rgb24(10, 20, 30);
            image.SaveAsPng(path);
        }

        var tensor = ImageFile.LoadRgb(path);

        tensor.Shape.ShouldBe(new[] { 1, 3, 2, 3 });
        int plane = 6;
        tensor.Data[0].ShouldBe(0 / 127.5f - 1f);
        tensor.Data[plane].ShouldBe(128 / 127.5f - 1f);
        tensor.Data[2 * plane].ShouldBe(255 / 127.5f - 1f);
        int last = 1 * 3 + 2;
        tensor.Data[last].ShouldBe(10 / 127.5f - 1f);
        tensor.Data[plane + last].ShouldBe(20 / 127.5f - 1f);
        tensor.Data[2 * plane + last].ShouldBe(30 / 127.5f - 1f);
    }

    [Fact]
    public void GrayscaleBecomesEqualChannelsAndAlphaIsDropped()
    {
        using var dir = new TempDir();
        using (var gray = new Image<L8>(2, 1)) { gray[1, 0] = new L8(200); gray.SaveAsPng(dir.File("gray.png")); }
        using (var rgba = new Image<Rgba32>(1, 1)) { rgba[0, 0] = new Rgba32(40, 80, 120, 0); rgba.SaveAsPng(dir.File("rgba.png")); }

        var fromGray = ImageFile.LoadRgb(dir.File("gray.png"));
        fromGray.Shape.ShouldBe(new[] { 1, 3, 1, 2 });
        new[] { fromGray.Data[1], fromGray.Data[3], fromGray.Data[5] }.ShouldAllBe(v => v == 200 / 127.5f - 1f);

        var fromRgba = ImageFile.LoadRgb(dir.File("rgba.png"));
        fromRgba.Data.ShouldBe(new[] { 40 / 127.5f - 1f, 80 / 127.5f - 1f, 120 / 127.5f - 1f });
    }

    [Fact]
    public void MasksStaySoftAndColourMasksUsePilGrayWeights()
    {
        using var dir = new TempDir();
        using (var gray = new Image<L8>(2, 1)) { gray[0, 0] = new L8(128); gray[1, 0] = new L8(255); gray.SaveAsPng(dir.File("soft.png")); }
        using (var colour = new Image<Rgb24>(3, 1))
        {
            colour[0, 0] = new Rgb24(255, 0, 0);
            colour[1, 0] = new Rgb24(0, 255, 0);
            colour[2, 0] = new Rgb24(0, 0, 255);
            colour.SaveAsPng(dir.File("colour.png"));
        }

        var soft = ImageFile.LoadMask(dir.File("soft.png"));
        soft.Shape.ShouldBe(new[] { 1, 1, 1, 2 });
        soft.Data.ShouldBe(new[] { 128 / 255f, 1f });

        // PIL: Image.new("RGB", …) pixels red, green, blue .convert("L") give 76, 150, 29.
        ImageFile.LoadMask(dir.File("colour.png")).Data.ShouldBe(new[] { 76 / 255f, 150 / 255f, 29 / 255f });
    }

    [Fact]
    public void SavingClampsAndTruncatesLikeBfl()
    {
        using var dir = new TempDir();
        string path = dir.File("out.png");
        // 127.5·(x + 1) = 10.9 truncates to 10 (rounding would give 11); 2 and −3 clamp to 255 and 0.
        var tensor = new HostTensor(new[] { 1, 3, 1, 2 }, new[] { (float)(10.9 / 127.5 - 1), 2f, -3f, 0.999f, -1f, 1f });

        ImageFile.SaveRgb(tensor, path);

        using var image = Image.Load<Rgb24>(path);
        image[0, 0].ShouldBe(new Rgb24(10, 0, 0));
        image[1, 0].ShouldBe(new Rgb24(255, (byte)(1.999 * 127.5), 255));
        Directory.GetFiles(dir.Path).ShouldBe(new[] { path }); // no temporary file left behind
    }

    [Fact]
    public void ARoundTripLosesAtMostTheOneLevelThatBflsTruncationLoses()
    {
        using var dir = new TempDir();
        using (var image = new Image<Rgb24>(256, 1))
        {
            for (int x = 0; x < 256; x++) image[x, 0] = new Rgb24((byte)x, (byte)(255 - x), (byte)x);
            image.SaveAsPng(dir.File("levels.png"));
        }

        ImageFile.SaveRgb(ImageFile.LoadRgb(dir.File("levels.png")), dir.File("again.png"));

        using var again = Image.Load<Rgb24>(dir.File("again.png"));
        for (int x = 0; x < 256; x++)
        {
            // Truncation never rounds up, and float32 error in u/127.5 − 1 is far below one level.
            (x - again[x, 0].R).ShouldBeInRange(0, 1, $"level {x}");
            again[x, 0].R.ShouldBe(again[x, 0].B);
        }
        again[0, 0].R.ShouldBe((byte)0);
        again[255, 0].R.ShouldBe((byte)255);
    }

    [Fact]
    public void AMissingFileIsNamed()
    {
        string path = Path.Combine(Path.GetTempPath(), "influx-no-such-image-" + Guid.NewGuid().ToString("N") + ".png");
        Should.Throw<FileNotFoundException>(() => ImageFile.LoadRgb(path)).Message.ShouldContain(path);
    }

    [Fact]
    public void AFileThatIsNotAnImageIsNamed()
    {
        using var dir = new TempDir();
        string path = dir.File("notes.png");
        File.WriteAllText(path, "this is text, not a PNG");
        Should.Throw<InvalidDataException>(() => ImageFile.LoadMask(path)).Message.ShouldContain(path);
    }

    [Fact]
    public void ATruncatedPngIsNamed()
    {
        using var dir = new TempDir();
        string path = dir.File("cut.png");
        File.WriteAllBytes(path, File.ReadAllBytes(TestPaths.Golden("fill-tiny-image.png")).Take(60).ToArray());
        Should.Throw<InvalidDataException>(() => ImageFile.LoadRgb(path)).Message.ShouldContain(path);
    }

    [Fact]
    public void SavingNaNWritesNothing()
    {
        using var dir = new TempDir();
        var tensor = new HostTensor(1, 3, 1, 1);
        tensor.Data[1] = float.NaN;
        Should.Throw<ArgumentException>(() => ImageFile.SaveRgb(tensor, dir.File("nan.png"))).Message.ShouldContain("NaN");
        Directory.GetFiles(dir.Path).ShouldBeEmpty();
    }

    [Fact]
    public void AnUnknownExtensionIsAnError()
    {
        using var dir = new TempDir();
        Should.Throw<ArgumentException>(() => ImageFile.SaveRgb(new HostTensor(1, 3, 1, 1), dir.File("out.xyz"))).Message.ShouldContain(".png");
    }
}
