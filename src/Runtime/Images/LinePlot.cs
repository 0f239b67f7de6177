using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Images;

/// <summary>One line of a <see cref="LinePlot"/>: its colour (8-bit RGB) and its points in data units, in x order.</summary>
public sealed record PlotSeries(string Name, byte R, byte G, byte B, IReadOnlyList<(double X, double Y)> Points);

/// <summary>The data ranges a plot's axes span (the frame's left, right, bottom and top), and whether y is on a log scale.</summary>
public readonly record struct PlotAxes(double XMin, double XMax, double YMin, double YMax, bool LogY);

/// <summary>
/// A line chart drawn pixel by pixel into an RGB image (no font is available here, so it carries no text): a frame,
/// light grid lines at quarters of each axis, each series as a 2-pixel polyline, and a legend of colour swatches in
/// series order in the top-right corner. The caller prints what the swatches and the axes' ends stand for.
/// </summary>
public static class LinePlot
{
    private const int Left = 24, Right = 24, Top = 24, Bottom = 24, Swatch = 12;

    /// <summary>The chart, [1, 3, height, width] in [−1, 1] (as <see cref="ImageFile.SaveRgb"/> writes), and its axes' ranges.</summary>
    /// <param name="logY">y on a log10 scale (losses that fall by orders of magnitude), when every y is positive.</param>
    public static (HostTensor Image, PlotAxes Axes) Draw(IReadOnlyList<PlotSeries> series, int width, int height, bool logY = false)
    {
        if (width < Left + Right + 16 || height < Top + Bottom + 16)
            throw new ArgumentException($"a plot of {width}×{height} pixels leaves no room for the lines; give at least {Left + Right + 16}×{Top + Bottom + 16}");
        var points = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        if (points.Count == 0) throw new ArgumentException("nothing to plot: every series is empty or not finite");
        logY &= points.All(p => p.Y > 0);
        double Scale(double y) => logY ? Math.Log10(y) : y;
        var axes = new PlotAxes(points.Min(p => p.X), points.Max(p => p.X), points.Min(p => p.Y), points.Max(p => p.Y), logY);
        // A flat range still gets a frame to draw into.
        if (axes.XMax == axes.XMin) axes = axes with { XMax = axes.XMin + 1 };
        if (axes.YMax == axes.YMin) axes = logY ? axes with { YMin = axes.YMin / 2, YMax = axes.YMax * 2 } : axes with { YMin = axes.YMin - 0.5, YMax = axes.YMax + 0.5 };

        var canvas = new Canvas(width, height);
        canvas.Fill(0, 0, width, height, 255, 255, 255);
        int plotWidth = width - Left - Right, plotHeight = height - Top - Bottom;
        for (int quarter = 1; quarter < 4; quarter++)
        {
            canvas.Fill(Left + plotWidth * quarter / 4, Top, 1, plotHeight, 225, 225, 225);
            canvas.Fill(Left, Top + plotHeight * quarter / 4, plotWidth, 1, 225, 225, 225);
        }
        canvas.Fill(Left, Top, 1, plotHeight + 1, 0, 0, 0);
        canvas.Fill(Left, Top + plotHeight, plotWidth + 1, 1, 0, 0, 0);
        canvas.Fill(Left + plotWidth, Top, 1, plotHeight + 1, 0, 0, 0);
        canvas.Fill(Left, Top, plotWidth + 1, 1, 0, 0, 0);

        (double X, double Y) ToPixel((double X, double Y) p) =>
            (Left + (p.X - axes.XMin) / (axes.XMax - axes.XMin) * plotWidth, Top + (Scale(axes.YMax) - Scale(p.Y)) / (Scale(axes.YMax) - Scale(axes.YMin)) * plotHeight);
        foreach (var line in series)
        {
            var pixels = line.Points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).Select(ToPixel).ToList();
            if (pixels.Count == 1) canvas.Fill((int)pixels[0].X - 1, (int)pixels[0].Y - 1, 3, 3, line.R, line.G, line.B);
            for (int i = 1; i < pixels.Count; i++) canvas.Line(pixels[i - 1], pixels[i], line.R, line.G, line.B);
        }
        for (int i = 0; i < series.Count; i++)
        {
            int x = width - Right - 6 - Swatch, y = Top + 6 + i * (Swatch + 4);
            canvas.Fill(x - 1, y - 1, Swatch + 2, Swatch + 2, 0, 0, 0);
            canvas.Fill(x, y, Swatch, Swatch, series[i].R, series[i].G, series[i].B);
        }
        return (canvas.Image, axes);
    }

    /// <summary>Pixels in [−1, 1] planes, set from 8-bit levels; writes outside the image are dropped.</summary>
    private sealed class Canvas(int width, int height)
    {
        public HostTensor Image { get; } = new(1, 3, height, width);

        public void Fill(int left, int top, int fillWidth, int fillHeight, byte r, byte g, byte b)
        {
            int plane = width * height;
            for (int y = Math.Max(0, top); y < Math.Min(height, top + fillHeight); y++)
                for (int x = Math.Max(0, left); x < Math.Min(width, left + fillWidth); x++)
                {
                    int i = y * width + x;
                    Image.Data[i] = ToUnit(r);
                    Image.Data[plane + i] = ToUnit(g);
                    Image.Data[2 * plane + i] = ToUnit(b);
                }
        }

        // Mid-level, so that saving (which truncates) gives back exactly the level.
        private static float ToUnit(byte level) => (level + 0.5f) / 127.5f - 1f;

        /// <summary>A 2-pixel-wide segment: a 2×2 dot every half pixel along it.</summary>
        public void Line((double X, double Y) from, (double X, double Y) to, byte r, byte g, byte b)
        {
            double length = Math.Max(Math.Abs(to.X - from.X), Math.Abs(to.Y - from.Y));
            int dots = Math.Max(1, (int)Math.Ceiling(length * 2));
            for (int i = 0; i <= dots; i++)
            {
                double t = (double)i / dots;
                Fill((int)Math.Round(from.X + t * (to.X - from.X)) - 1, (int)Math.Round(from.Y + t * (to.Y - from.Y)) - 1, 2, 2, r, g, b);
            }
        }
    }
}
