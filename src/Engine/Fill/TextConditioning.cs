using System.Globalization;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>
/// The prompt as the transformer takes it: txt [1, Lt, context_in_dim] (T5's token states) and
/// vec [1, vec_in_dim] (CLIP's pooled output). Read from a file until the text encoders are built.
/// </summary>
public sealed record TextConditioning(HostTensor Txt, HostTensor Vec)
{
    public const string TxtName = "txt";
    public const string VecName = "vec";

    /// <summary>Reads tensors "txt" and "vec" of a safetensors file and checks them against the transformer.</summary>
    public static TextConditioning Load(string path, ModelDescriptor transformer)
    {
        using var file = SafeTensorsFile.Open(path);
        HostTensor Read(string name) => file.TryGetTensor(name, out _)
            ? file.ReadFloat32(name)
            : throw new InvalidDataException(
                $"text embeddings file {path} has no tensor '{name}' (it has {string.Join(", ", file.Tensors.Select(t => t.Name))}); " +
                $"it needs '{TxtName}' [1, L, context] and '{VecName}' [1, vec]");
        var text = new TextConditioning(Read(TxtName), Read(VecName));
        text.Validate(transformer, path);
        return text;
    }

    /// <summary>Throws with both shapes when txt or vec do not fit the transformer's context_in_dim and vec_in_dim.</summary>
    public void Validate(ModelDescriptor transformer, string source)
    {
        int context = IntParam(transformer, "context_in_dim"), vector = IntParam(transformer, "vec_in_dim");
        if (Txt.Rank != 3 || Txt.Shape[0] != 1 || Txt.Shape[2] != context || Txt.Shape[1] < 1)
            throw new InvalidDataException(
                $"{source}: '{TxtName}' is {HostTensor.FormatShape(Txt.Shape)}; {transformer.Name} needs [1, L, {context}] (L text tokens, L ≥ 1)");
        if (Vec.Rank != 2 || Vec.Shape[0] != 1 || Vec.Shape[1] != vector)
            throw new InvalidDataException(
                $"{source}: '{VecName}' is {HostTensor.FormatShape(Vec.Shape)}; {transformer.Name} needs [1, {vector}]");
    }

    internal static int IntParam(ModelDescriptor model, string name) =>
        model.Params.TryGetValue(name, out var text) && int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)
            ? value
            : throw new InvalidDataException($"model {model.Name} ({model.SchemaFile}) has no integer param '{name}', which this use of it needs");
}
