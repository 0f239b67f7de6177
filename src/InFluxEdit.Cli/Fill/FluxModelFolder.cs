namespace InFluxEdit.Cli.Fill;

/// <summary>
/// A FLUX.1 Fill model folder as Hugging Face ships it: the transformer (flux1-fill-dev.safetensors) and the autoencoder
/// (ae.safetensors) under BFL's key names at the top, the text encoders and tokenizers in text_encoder/,
/// text_encoder_2/, tokenizer/ and tokenizer_2/ (diffusers' transformer/ and vae/ folders use other key names and are
/// not read).
/// </summary>
public static class FluxModelFolder
{
    public const string AutoencoderFile = "ae.safetensors";

    /// <summary>The transformer checkpoint: flux1-fill-dev.safetensors, else the one other .safetensors at the top.</summary>
    public static string Transformer(string folder)
    {
        RequireFolder(folder);
        string preferred = Path.Combine(folder, "flux1-fill-dev.safetensors");
        if (File.Exists(preferred)) return preferred;
        var candidates = Directory.EnumerateFiles(folder, "*.safetensors")
            .Where(p => !string.Equals(Path.GetFileName(p), AutoencoderFile, StringComparison.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal).ToList();
        return candidates.Count switch
        {
            1 => candidates[0],
            0 => throw new FileNotFoundException($"--flux-dir {folder} holds no transformer checkpoint (flux1-fill-dev.safetensors); give --weights"),
            _ => throw new ArgumentException(
                $"--flux-dir {folder} holds several checkpoints ({string.Join(", ", candidates.Select(Path.GetFileName))}); say which with --weights"),
        };
    }

    /// <summary>The autoencoder checkpoint: ae.safetensors at the top.</summary>
    public static string Autoencoder(string folder)
    {
        RequireFolder(folder);
        string path = Path.Combine(folder, AutoencoderFile);
        return File.Exists(path) ? path : throw new FileNotFoundException($"--flux-dir {folder} has no {AutoencoderFile}; give --vae");
    }

    private static void RequireFolder(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"--flux-dir {folder} does not exist");
    }
}
