using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

using InFluxEdit.Fill;

namespace InFluxEdit.Text;

/// <summary>
/// The compiled text encoders as host-to-host calls on token ids. Any model of family "clip-text" (ClipL, ClipTiny)
/// or "t5-encoder" (T5Xxl, T5Tiny) serves; load one with LoadedModel.Load(checkpoint, family, backend, ModelCatalog.All)
/// and the family name. Ids go in as float32 holding whole numbers (exact below 2^24; every vocabulary fits).
/// </summary>
public static class TextEncoders
{
    public const string ClipFamily = "clip-text";
    public const string T5Family = "t5-encoder";

    public const string InputIds = "input_ids";
    public const string LastHiddenState = "last_hidden_state";
    public const string Pooled = "pooled";

    /// <summary>CLIP: ids [B, L] (L = 77 from the tokenizer) → (last_hidden_state [B, L, hidden], pooled [B, hidden]).</summary>
    public static (HostTensor LastHiddenState, HostTensor Pooled) EncodeClip(CompiledModel clip, IReadOnlyList<int[]> ids)
    {
        var outputs = Run(clip, ids, LastHiddenState, Pooled);
        return (outputs[0], outputs[1]);
    }

    /// <summary>T5: ids [B, L] (every row the same length) → last_hidden_state [B, L, d_model].</summary>
    public static HostTensor EncodeT5(CompiledModel t5, IReadOnlyList<int[]> ids) => Run(t5, ids, LastHiddenState)[0];

    /// <summary>Token ids as the float32 tensor [rows, length] the encoders take.</summary>
    public static HostTensor IdsTensor(IReadOnlyList<int[]> ids)
    {
        if (ids.Count == 0) throw new ArgumentException("no token id rows were given", nameof(ids));
        int length = ids[0].Length;
        if (ids.Any(row => row.Length != length))
            throw new ArgumentException($"token id rows differ in length (the first has {length}): pad them to one length", nameof(ids));
        var data = new float[ids.Count * length];
        for (int r = 0; r < ids.Count; r++)
            for (int c = 0; c < length; c++)
            {
                int id = ids[r][c];
                if (id < 0 || id >= 1 << 24) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is not representable exactly as float32");
                data[r * length + c] = id;
            }
        return new HostTensor(new[] { ids.Count, length }, data);
    }

    private static HostTensor[] Run(CompiledModel model, IReadOnlyList<int[]> ids, params string[] outputNames)
    {
        ModelEntries.Require(model, model.Entries[0].Name, new[] { InputIds }, outputNames[0]);
        var backend = model.Backend;
        using var deviceIds = backend.Upload(IdsTensor(ids));
        var outputs = model.Run(new Dictionary<string, DeviceTensor> { [InputIds] = deviceIds });
        try
        {
            return outputNames.Select(name => outputs.TryGetValue(name, out var tensor)
                ? backend.Download(tensor, tensor.Shape)
                : throw new ArgumentException($"{model.Info.Name} gives ({string.Join(", ", outputs.Keys)}), not '{name}'")).ToArray();
        }
        finally
        {
            foreach (var tensor in outputs.Values) tensor.Dispose();
        }
    }
}
