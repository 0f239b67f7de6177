using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Datasets;

/// <summary>One inpainting example: a scene, the mask of what to fill (1 = generate) and the scene's caption.</summary>
public sealed record InpaintingExample(HostTensor Image, HostTensor Mask, string Caption);

/// <summary>
/// Procedural scenes for pretraining a toy base model as an inpainting model: one filled shape (circle or square) of a
/// palette colour on another palette colour, captioned like the circles experiment ("red square with blue background"),
/// with a random mask: the whole picture a third of the time (so the caption alone must decide the colours), else a
/// rectangle or an ellipse over part of it. Never the circles edit itself (no outlines), so a LoRA still has to learn it.
/// </summary>
public static class ShapeScenes
{
    private static readonly string[] Shapes = ["circle", "square"];

    /// <summary>Every word of the scenes' and the circles' captions.</summary>
    public static IReadOnlyList<string> Vocabulary { get; } =
        [.. CirclesDataset.Palette.Select(c => c.Name), .. Shapes, "with", "background"];

    public static InpaintingExample Draw(TrainingRandom random, int size) => Draw(random, size, size);

    /// <summary>
    /// A <paramref name="width"/>×<paramref name="height"/> scene: the shape is sized by the short side and placed anywhere,
    /// the mask's sides are fractions of the picture's. A square draws exactly what <see cref="Draw(TrainingRandom, int)"/> does.
    /// </summary>
    public static InpaintingExample Draw(TrainingRandom random, int width, int height)
    {
        int shortSide = Math.Min(width, height);
        var palette = CirclesDataset.Palette;
        int fillIndex = random.NextInt(palette.Count);
        var fill = palette[fillIndex];
        var background = palette[(fillIndex + 1 + random.NextInt(palette.Count - 1)) % palette.Count];
        bool square = random.NextInt(2) == 1;
        double half = shortSide * (0.15 + 0.2 * random.NextDouble());
        double margin = half + shortSide * 0.04;
        double centreX = margin + (width - 2 * margin) * random.NextDouble();
        double centreY = margin + (height - 2 * margin) * random.NextDouble();
        var image = CirclesDataset.Render(width, height, (x, y) =>
        {
            double dx = x - centreX, dy = y - centreY;
            bool inside = square ? Math.Abs(dx) <= half && Math.Abs(dy) <= half : dx * dx + dy * dy <= half * half;
            return inside ? fill : background;
        });
        return new InpaintingExample(image, Mask(random, width, height), $"{fill.Name} {Shapes[square ? 1 : 0]} with {background.Name} background");
    }

    private static HostTensor Mask(TrainingRandom random, int pictureWidth, int pictureHeight)
    {
        var mask = new HostTensor(1, 1, pictureHeight, pictureWidth);
        int kind = random.NextInt(3);
        if (kind == 0)
        {
            Array.Fill(mask.Data, 1f);
            return mask;
        }
        double width = pictureWidth * (0.25 + 0.5 * random.NextDouble()), height = pictureHeight * (0.25 + 0.5 * random.NextDouble());
        double left = (pictureWidth - width) * random.NextDouble(), top = (pictureHeight - height) * random.NextDouble();
        for (int y = 0; y < pictureHeight; y++)
            for (int x = 0; x < pictureWidth; x++)
            {
                double u = (x + 0.5 - left) / width, v = (y + 0.5 - top) / height;
                bool inside = kind == 1
                    ? u is >= 0 and <= 1 && v is >= 0 and <= 1
                    : (u - 0.5) * (u - 0.5) + (v - 0.5) * (v - 0.5) <= 0.25;
                mask.Data[y * pictureWidth + x] = inside ? 1f : 0f;
            }
        return mask;
    }
}
