using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Images;

public sealed class LinePlotTests
{
    /// <summary>A pixel of an image as loaded from a file, in 8-bit levels.</summary>
    private static (int R, int G, int B) Pixel(HostTensor image, int y, int x)
    {
        int height = image.Shape[2], width = image.Shape[3], plane = height * width, i = y * width + x;
        static int Level(float v) => (int)Math.Round((v + 1) * 127.5);
        return (Level(image.Data[i]), Level(image.Data[plane + i]), Level(image.Data[2 * plane + i]));
    }

    [Fact]
    public void A_plot_is_written_at_its_size_with_each_line_and_swatch_in_its_colour()
    {
        using var dir = new TempDir();
        var series = new[]
        {
            new PlotSeries("falling", 200, 10, 10, [(0, 1.0), (10, 0.1)]),
            new PlotSeries("flat", 10, 10, 200, [(0, 0.5), (10, 0.5)]),
        };
        var (image, axes) = LinePlot.Draw(series, 320, 200);
        string path = dir.File("plot.png");
        ImageFile.SaveRgb(image, path);

        var saved = ImageFile.LoadRgb(path);
        saved.Shape.ShouldBe([1, 3, 200, 320]);
        axes.ShouldBe(new PlotAxes(0, 10, 0.1, 1.0, LogY: false));
        // The falling line starts at the frame's top-left corner (x 0, y at its maximum) and the flat one crosses the
        // middle of the frame at 5/9 of its height (0.5 between 0.1 and 1.0, drawn from the top): the frame is 24 px in.
        int plotWidth = 320 - 48, plotHeight = 200 - 48;
        Pixel(saved, 24 + 1, 24 + 2).ShouldBe((200, 10, 10));
        int flatY = 24 + (int)Math.Round((1.0 - 0.5) / 0.9 * plotHeight);
        Pixel(saved, flatY, 24 + plotWidth / 3).ShouldBe((10, 10, 200));
        // The legend's swatches, in series order, top right.
        Pixel(saved, 24 + 6 + 6, 320 - 24 - 6 - 6).ShouldBe((200, 10, 10));
        Pixel(saved, 24 + 6 + 16 + 6, 320 - 24 - 6 - 6).ShouldBe((10, 10, 200));
        Pixel(saved, 90, 103).ShouldBe((255, 255, 255));
    }

    [Fact]
    public void A_log_scale_puts_each_decade_an_equal_height_apart()
    {
        using var dir = new TempDir();
        var (drawn, axes) = LinePlot.Draw([new PlotSeries("loss", 0, 150, 0, [(0, 100.0), (1, 10.0), (2, 1.0)])], 200, 148, logY: true);
        ImageFile.SaveRgb(drawn, dir.File("log.png"));
        var image = ImageFile.LoadRgb(dir.File("log.png"));
        axes.LogY.ShouldBeTrue();
        // 10 lies halfway between 100 and 1 on a log scale: at x 1 (the middle) the line is at the frame's middle height.
        Pixel(image, 24 + 50, 24 + 76).ShouldBe((0, 150, 0));
    }

    [Fact]
    public void A_plot_with_nothing_to_draw_or_no_room_is_refused()
    {
        Should.Throw<ArgumentException>(() => LinePlot.Draw([new PlotSeries("none", 0, 0, 0, [])], 320, 200)).Message.ShouldContain("nothing to plot");
        Should.Throw<ArgumentException>(() => LinePlot.Draw([new PlotSeries("a", 0, 0, 0, [(0, 1.0)])], 20, 20)).Message.ShouldContain("20×20");
    }
}
