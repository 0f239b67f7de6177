using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Images;

public class ImageSizingTests
{
    [Theory]
    [InlineData(24, 40, SizingMode.Resize, 32, 48)] // 1.5 and 2.5 tokens round up
    [InlineData(20, 36, SizingMode.Resize, 16, 32)] // 1.25 and 2.25 tokens round down
    [InlineData(20, 36, SizingMode.Pad, 32, 48)]
    [InlineData(48, 64, SizingMode.Pad, 48, 64)]
    public void PlansMultiplesOf16(int height, int width, SizingMode mode, int plannedHeight, int plannedWidth)
    {
        var plan = ImageSizing.Plan(height, width, mode);
        (plan.Height, plan.Width).ShouldBe((plannedHeight, plannedWidth));
        plan.ChangesSize.ShouldBe(height != plannedHeight || width != plannedWidth);
    }

    [Fact]
    public void TooSmallImagesAreRejectedWithTheirSize() =>
        Should.Throw<ArgumentException>(() => ImageSizing.Plan(1, 1, SizingMode.Resize, "the input a.png")).Message
            .ShouldSatisfyAllConditions(m => m.ShouldContain("a.png"), m => m.ShouldContain("1×1"));

    [Fact]
    public void PaddingRepeatsTheEdgesAndRestoringCropsThemOff()
    {
        var image = Ramp(1, 2, 17, 18);
        var (padded, plan) = ImageSizing.ToMultipleOf16(image, SizingMode.Pad);

        padded.Shape.ShouldBe(new[] { 1, 2, 32, 32 });
        At(padded, 1, 31, 31).ShouldBe(At(image, 1, 16, 17));
        At(padded, 0, 5, 25).ShouldBe(At(image, 0, 5, 17));
        ImageSizing.Restore(padded, plan).Data.ShouldBe(image.Data);
    }

    [Fact]
    public void ResizingKeepsAConstantImageConstant()
    {
        var image = new HostTensor(1, 3, 21, 37);
        Array.Fill(image.Data, 0.25f);
        var (resized, plan) = ImageSizing.ToMultipleOf16(image, SizingMode.Resize);
        resized.Shape.ShouldBe(new[] { 1, 3, 16, 32 });
        resized.Data.ShouldAllBe(v => Math.Abs(v - 0.25f) < 1e-6f);
        ImageSizing.Restore(resized, plan).Shape.ShouldBe(image.Shape);
    }

    [Fact]
    public void UpscalingReproducesALinearRampAwayFromTheBorders()
    {
        // The Keys cubic (a = −0.5) reproduces linear functions exactly; value(x) = x at source pixel centres
        // means value = (X + 0.5)·in/out − 0.5 at target pixel X.
        int sourceWidth = 20, targetWidth = 32;
        var image = new HostTensor(1, 1, 16, sourceWidth);
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < sourceWidth; x++) image.Data[y * sourceWidth + x] = x;
        var resized = Resample.Bicubic(image, 16, targetWidth);
        for (int x = 4; x < targetWidth - 4; x++)
            resized.Data[3 * targetWidth + x].ShouldBe((float)((x + 0.5) * sourceWidth / targetWidth - 0.5), 1e-4f);
    }

    private static HostTensor Ramp(int batch, int channels, int height, int width)
    {
        var t = new HostTensor(batch, channels, height, width);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = i;
        return t;
    }

    private static float At(HostTensor t, int channel, int y, int x) => t.Data[(channel * t.Shape[2] + y) * t.Shape[3] + x];
}
