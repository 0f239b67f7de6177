using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Fill;

/// <summary>
/// The FLUX autoencoder's two entries as host-to-host calls: "encode" (image [B, 3, 8h, 8w] in [−1, 1] → latent
/// [B, 16, h, w] = scale·(mean − shift)) and "decode" (the inverse direction). Written against the entry names so
/// that any compiled model of family "flux-vae" serves.
/// </summary>
public static class VaeCodec
{
    public const string Family = "flux-vae";

    public static HostTensor Encode(CompiledModel vae, HostTensor image) => Run(vae, "encode", "image", image, "latent");

    public static HostTensor Decode(CompiledModel vae, HostTensor latent) => Run(vae, "decode", "latent", latent, "image");

    /// <summary>Throws unless the model has encode(image) → latent and decode(latent) → image.</summary>
    public static void Require(CompiledModel vae)
    {
        ModelEntries.Require(vae, "encode", new[] { "image" }, "latent");
        ModelEntries.Require(vae, "decode", new[] { "latent" }, "image");
    }

    private static HostTensor Run(CompiledModel model, string entry, string inputName, HostTensor input, string outputName)
    {
        var backend = model.Backend;
        using var deviceInput = backend.Upload(input);
        var outputs = model.Run(entry, new Dictionary<string, DeviceTensor> { [inputName] = deviceInput });
        try
        {
            var output = outputs[outputName];
            return backend.Download(output, output.Shape);
        }
        finally
        {
            foreach (var tensor in outputs.Values) tensor.Dispose();
        }
    }
}

internal static class ModelEntries
{
    public static void Require(CompiledModel model, string entry, IReadOnlyList<string> inputs, string output)
    {
        var found = model.Entries.FirstOrDefault(e => e.Name == entry)
            ?? throw new ArgumentException($"{model.Info.Name} has no entry '{entry}' (it has {string.Join(", ", model.Entries.Select(e => e.Name))})");
        var missing = inputs.Where(i => !found.InputNames.Contains(i)).ToList();
        if (missing.Count > 0 || !found.OutputNames.Contains(output))
            throw new ArgumentException(
                $"{model.Info.Name}.{entry} takes ({string.Join(", ", found.InputNames)}) and gives ({string.Join(", ", found.OutputNames)}); " +
                $"the Fill pipeline needs inputs ({string.Join(", ", inputs)}) and output '{output}'");
    }
}
