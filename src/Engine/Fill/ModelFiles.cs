using InFluxEdit.Text;

namespace InFluxEdit.Fill;

/// <summary>Where a run's checkpoints are when they are given one by one or as a FLUX model folder.</summary>
public static class ModelFiles
{
    /// <summary>The autoencoder: the one given, else the model folder's ae.safetensors.</summary>
    public static string Autoencoder(string? vae, string? fluxDir) => vae
        ?? (fluxDir != null ? FluxModelFolder.Autoencoder(fluxDir) : throw new ArgumentException("--vae is required: the autoencoder checkpoint (or give --flux-dir)"));
}

/// <summary>
/// The base model a request runs on: a FLUX.1 Fill model folder, or its parts one by one, and where prompts'
/// conditioning comes from.
/// </summary>
public abstract record ModelSelection
{
    /// <summary>A FLUX.1 Fill model folder (Hugging Face layout): the transformer, ae.safetensors and the text encoders.</summary>
    public string? FluxDir { get; init; }

    /// <summary>A compiled transformer's name, or a checkpoint to recognise when <see cref="Weights"/> is not given.</summary>
    public string? Model { get; init; }

    /// <summary>The transformer checkpoint (.safetensors, BFL keys); default: <see cref="FluxDir"/>'s.</summary>
    public string? Weights { get; init; }

    /// <summary>The autoencoder checkpoint; default: <see cref="FluxDir"/>'s ae.safetensors.</summary>
    public string? Vae { get; init; }

    /// <summary>Where prompts' conditioning comes from; its FluxDir defaults to <see cref="FluxDir"/>.</summary>
    public TextEncoderSettings Text { get; init; } = new();

    /// <summary>The text settings in effect: <see cref="Text"/>, its model folder defaulting to <see cref="FluxDir"/>.</summary>
    public TextEncoderSettings TextInEffect => Text with { FluxDir = Text.FluxDir ?? FluxDir };

    /// <summary>How the transformer's weight matrices are held (--base-precision); null: as the file stores them ("keep": fp8 and GGUF
    /// matrices stay quantized), except that full training decodes them to train them in float32.</summary>
    public Runtime.Quantization.BasePrecision? BasePrecision { get; init; }

    /// <summary>The autoencoder: <see cref="Vae"/>, else <see cref="FluxDir"/>'s.</summary>
    public string AutoencoderPath => ModelFiles.Autoencoder(Vae, FluxDir);
}
