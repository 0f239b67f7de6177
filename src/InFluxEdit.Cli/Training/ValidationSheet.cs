using InFluxEdit.Cli.Fill;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Training;

/// <summary>
/// Validation edits during training: each held-out pair's source edited with the adapters as they are now, saved
/// beside one contact sheet whose rows are source | target | result, so progress can be seen at a glance.
/// </summary>
public static class ValidationSheet
{
    public static void Write(string directory, FillPipeline pipeline, IReadOnlyList<TrainingPair> pairs, EditMethod method,
        Func<string, TextConditioning> textFor, int steps, double guidance, long seed, TextWriter log)
    {
        Directory.CreateDirectory(directory);
        var rows = new List<HostTensor>();
        foreach (var pair in pairs)
        {
            var source = ImageFile.LoadRgb(pair.SourcePath);
            var target = ImageFile.LoadRgb(pair.TargetPath);
            // For an inpainting LoRA the pair's second image is the mask of the region to fill.
            var mask = method == EditMethod.Fill ? ImageFile.LoadMask(pair.TargetPath) : null;
            var result = pipeline.Edit(new FillEditRequest(source, mask, method, textFor(pair.Caption), steps, guidance, Seed: seed)).Image;
            ImageFile.SaveRgb(result, Path.Combine(directory, pair.Name + ".png"));
            rows.Add(Row(source, target, result));
        }
        string sheet = Path.Combine(directory, "contact-sheet.png");
        ImageFile.SaveRgb(Stack(rows), sheet);
        log.WriteLine($"validation: {pairs.Count} edits and {sheet}");
    }

    /// <summary>Images of one height side by side ([1, 3, H, W] each; others are resized to the first's height).</summary>
    private static HostTensor Row(params HostTensor[] images)
    {
        int height = images[0].Shape[2];
        var fitted = images.Select(i => i.Shape[2] == height ? i : Resample.Bicubic(i, height, Math.Max(1, i.Shape[3] * height / i.Shape[2]))).ToList();
        int width = fitted.Sum(i => i.Shape[3]);
        var row = new HostTensor(1, 3, height, width);
        int left = 0;
        foreach (var image in fitted)
        {
            int w = image.Shape[3];
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < height; y++)
                    Array.Copy(image.Data, (c * height + y) * w, row.Data, (c * height + y) * width + left, w);
            left += w;
        }
        return row;
    }

    /// <summary>Rows one above the other, each resized to the first row's width.</summary>
    private static HostTensor Stack(IReadOnlyList<HostTensor> rows)
    {
        int width = rows[0].Shape[3];
        var fitted = rows.Select(r => r.Shape[3] == width ? r : Resample.Bicubic(r, Math.Max(1, r.Shape[2] * width / r.Shape[3]), width)).ToList();
        int height = fitted.Sum(r => r.Shape[2]);
        var sheet = new HostTensor(1, 3, height, width);
        int top = 0;
        foreach (var row in fitted)
        {
            int h = row.Shape[2];
            for (int c = 0; c < 3; c++)
                Array.Copy(row.Data, c * h * width, sheet.Data, (c * height + top) * width, h * width);
            top += h;
        }
        return sheet;
    }
}
