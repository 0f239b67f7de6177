namespace InFluxEdit.Fill;

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

    /// <summary>
    /// What a model folder made by pretrain-toy was trained with (settings.T5Length and settings.Guidance of its
    /// toy.json), or null for any other folder. Prompts must be padded as in training (pads are attended), and a LoRA
    /// trains with the guidance input the base saw.
    /// </summary>
    public static ToySettings? ReadToySettings(string? folder)
    {
        string? manifest = folder == null ? null : Path.Combine(folder, ToyManifestFile);
        if (manifest == null || !File.Exists(manifest)) return null;
        try
        {
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(manifest));
            if (json.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw new InvalidDataException($"{manifest} holds a JSON {json.RootElement.ValueKind.ToString().ToLowerInvariant()}, not the object pretrain-toy writes; write it again with pretrain-toy, or give --t5-length and --guidance");
            if (!json.RootElement.TryGetProperty("settings", out var settings)) return new ToySettings(null, null);
            return new ToySettings(settings.TryGetProperty("T5Length", out var length) ? length.GetInt32() : null,
                settings.TryGetProperty("Guidance", out var guidance) ? guidance.GetDouble() : null);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{manifest} is not the manifest pretrain-toy writes ({e.Message}); write it again with pretrain-toy, or give --t5-length and --guidance");
        }
    }

    /// <summary>The guidance input while training: the given one, else the one a toy <paramref name="folder"/> was trained with, else 1 (as the seed trains FLUX Fill).</summary>
    public static double TrainingGuidance(string? folder, double? given) => given ?? ReadToySettings(folder)?.Guidance ?? 1.0;

    public const string ToyManifestFile = "toy.json";

    private static void RequireFolder(string folder) => Runtime.IO.PathChecks.RequireFolder(folder, "--flux-dir");
}

/// <summary>A toy model folder's training settings that later runs must match.</summary>
public sealed record ToySettings(int? T5Length, double? Guidance);
