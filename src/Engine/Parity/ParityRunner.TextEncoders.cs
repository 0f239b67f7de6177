using System.Text.RegularExpressions;
using InFluxEdit.Fill;
using InFluxEdit.Text;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Parity;

/// <summary>
/// The text-encoder cases: the case's I64 "input_ids" through the compiled CLIP text tower ("clip-text": expected
/// last_hidden_state and pooled) or T5 encoder ("t5-encoder": one "input_ids_&lt;L&gt;" per length, expected
/// last_hidden_state_&lt;L&gt;), the model recognised from the case's weights among the family's compiled models.
/// </summary>
public sealed partial class ParityRunner
{
    private List<ParityRow> RunClipText(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        using var clip = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 0)), TextEncoders.ClipFamily, _backend, _models);
        var (lastHiddenState, pooled) = TextEncoders.EncodeClip(clip.Model, ReadIds(data, "input_ids"));
        var values = new Dictionary<string, HostTensor>
        {
            [TextEncoders.LastHiddenState] = lastHiddenState,
            [TextEncoders.Pooled] = pooled,
        };
        return Compare(goldenCase, data, ExpectedNames(data), values, computed);
    }

    private List<ParityRow> RunT5Encoder(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        using var t5 = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 0)), TextEncoders.T5Family, _backend, _models);
        var values = new Dictionary<string, HostTensor>();
        foreach (string name in data.OtherTensors.Select(t => t.Name).Where(n => Regex.IsMatch(n, @"^input_ids_\d+$")))
            values[TextEncoders.LastHiddenState + name["input_ids".Length..]] = TextEncoders.EncodeT5(t5.Model, ReadIds(data, name));
        if (values.Count == 0)
            throw new InvalidDataException($"case {goldenCase.Name} has no input_ids_<L> tensors");
        return Compare(goldenCase, data, ExpectedNames(data), values, computed);
    }

    /// <summary>An I64 [B, L] tensor of token ids as rows.</summary>
    private static List<int[]> ReadIds(SafeTensorsFile data, string name)
    {
        long[] ids = data.ReadInt64(name, out int[] shape);
        if (shape.Length != 2) throw new InvalidDataException($"{name} is {HostTensor.FormatShape(shape)}, not [batch, tokens]");
        return Enumerable.Range(0, shape[0]).Select(r => ids.Skip(r * shape[1]).Take(shape[1]).Select(id => checked((int)id)).ToArray()).ToList();
    }
}
