using InFluxEdit.Fill;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Training;

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
            rows.Add(ImageGrid.Row(source, target, result));
        }
        string sheet = Path.Combine(directory, "contact-sheet.png");
        ImageFile.SaveRgb(Wrap(rows), sheet);
        log.WriteLine($"validation: {pairs.Count} edits and {sheet}");
    }

    private const int MaxSheetRows = 8;

    /// <summary>
    /// The (source | target | result) rows, wrapped into side-by-side columns with a white gap when there are more than
    /// <see cref="MaxSheetRows"/>, so a long validation set still gives a sheet one can look at.
    /// </summary>
    public static HostTensor Wrap(IReadOnlyList<HostTensor> rows)
    {
        int columns = (rows.Count + MaxSheetRows - 1) / MaxSheetRows;
        if (columns == 1) return ImageGrid.Stack(rows);
        HostTensor White(int height, int width)
        {
            var white = new HostTensor(1, 3, height, width);
            Array.Fill(white.Data, 1f);
            return white;
        }
        int height = rows[0].Shape[2], width = rows[0].Shape[3], gap = Math.Max(4, height / 8);
        var lines = rows.Chunk(columns).Select(line => ImageGrid.Row(
            [.. Enumerable.Range(0, columns).SelectMany(i => (HostTensor[])[i < line.Length ? line[i] : White(height, width), White(height, gap)])]));
        return ImageGrid.Stack([.. lines]);
    }
}
