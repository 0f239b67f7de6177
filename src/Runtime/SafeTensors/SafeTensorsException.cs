namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>
/// A safetensors file that cannot be read as it is: the message names the file, the problem and, where known, the fix.
/// An <see cref="IOException"/> because <see cref="InvalidDataException"/>, the closer fit, is sealed.
/// </summary>
public sealed class SafeTensorsException : IOException
{
    public SafeTensorsException(string path, string problem, string? fix = null)
        : base($"Cannot read safetensors file '{path}': {problem}" + (fix is null ? "" : $" {fix}"))
    {
        FilePath = path;
    }

    public string FilePath { get; }
}
