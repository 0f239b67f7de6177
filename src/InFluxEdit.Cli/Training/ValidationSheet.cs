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
            rows.Add(ImageGrid.Row(source, target, result));
        }
        string sheet = Path.Combine(directory, "contact-sheet.png");
        ImageFile.SaveRgb(ImageGrid.Stack(rows), sheet);
        log.WriteLine($"validation: {pairs.Count} edits and {sheet}");
    }
}
