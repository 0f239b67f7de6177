using System.Text.Json;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Text;

namespace InFluxEdit.Parity;

/// <summary>
/// The tokenizer cases: every prompt of the case's prompts file through the CLIP BPE or the T5 SentencePiece
/// tokenizer, compared id by id with the reference "input_ids" [N, max_length]. The error is the share of ids that
/// differ (the tolerance is 0: exact), so a float relative L2 never hides an off-by-one id.
/// </summary>
public sealed partial class ParityRunner
{
    private List<ParityRow> RunClipTokenizer(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        var tokenizer = ClipTokenizer.Load(
            _manifest.PathOf(Require(goldenCase.File("vocab"), goldenCase, "files.vocab")),
            _manifest.PathOf(Require(goldenCase.File("merges"), goldenCase, "files.merges")));
        int maxLength = (int)(goldenCase.Number("max_length") ?? ClipTokenizer.DefaultMaxLength);
        return CompareTokenIds(goldenCase, ReadPrompts(goldenCase).Select(p => tokenizer.Encode(p, maxLength)).ToList(), computed);
    }

    private List<ParityRow> RunT5Tokenizer(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        var tokenizer = SentencePieceTokenizer.Load(_manifest.PathOf(Require(goldenCase.File("model"), goldenCase, "files.model")));
        int maxLength = (int)(goldenCase.Number("max_length") ?? throw new InvalidDataException($"case {goldenCase.Name} has no \"max_length\""));
        return CompareTokenIds(goldenCase, ReadPrompts(goldenCase).Select(p => tokenizer.Encode(p, maxLength)).ToList(), computed);
    }

    /// <summary>The case's "prompts" file: a JSON array of strings.</summary>
    private List<string> ReadPrompts(GoldenCase goldenCase)
    {
        string path = _manifest.PathOf(Require(goldenCase.File("prompts"), goldenCase, "files.prompts"));
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}");
        }
        using var _ = document;
        if (document.RootElement.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path} is not a JSON array of prompts");
        return document.RootElement.EnumerateArray().Select(e => e.GetString()
            ?? throw new InvalidDataException($"{path} holds a prompt that is not a string")).ToList();
    }

    private List<ParityRow> CompareTokenIds(GoldenCase goldenCase, IReadOnlyList<int[]> rows, Dictionary<string, HostTensor> computed)
    {
        const string name = "input_ids";
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        long[] expected = data.ReadInt64("expected." + name, out int[] shape);
        double tolerance = goldenCase.ToleranceFor(name);
        int width = rows.Count > 0 ? rows[0].Length : 0;
        // Ids are far below 2^24, so the float copy written with --out is exact.
        computed[name] = new HostTensor(new[] { rows.Count, width }, rows.SelectMany(r => r.Select(id => (float)id)).ToArray());
        if (shape.Length != 2 || shape[0] != rows.Count || shape[1] != width)
            return new List<ParityRow>
            {
                new(goldenCase.Name, name, double.NaN, tolerance, ParityStatus.Failed,
                    $"shape [{rows.Count}, {width}] here, {HostTensor.FormatShape(shape)} expected"),
            };
        int differing = 0;
        var firstDifferences = new List<string>();
        for (int i = 0; i < rows.Count; i++)
        {
            for (int j = 0; j < width; j++)
            {
                if (rows[i][j] == expected[i * width + j]) continue;
                differing++;
                if (firstDifferences.Count < 3) firstDifferences.Add($"[{i},{j}] {rows[i][j]} vs {expected[i * width + j]}");
            }
        }
        double error = expected.Length == 0 ? 0 : (double)differing / expected.Length;
        return new List<ParityRow>
        {
            new(goldenCase.Name, name, error, tolerance, error <= tolerance ? ParityStatus.Passed : ParityStatus.Failed,
                differing == 0 ? null : $"{differing} of {expected.Length} ids differ, first {string.Join(", ", firstDifferences)}"),
        };
    }
}
