namespace InFluxEdit.Fill;

/// <summary>Where a run's checkpoints are when they are given one by one or as a FLUX model folder.</summary>
public static class ModelFiles
{
    /// <summary>The autoencoder: the one given, else the model folder's ae.safetensors.</summary>
    public static string Autoencoder(string? vae, string? fluxDir) => vae
        ?? (fluxDir != null ? FluxModelFolder.Autoencoder(fluxDir) : throw new ArgumentException("--vae is required: the autoencoder checkpoint (or give --flux-dir)"));
}
