namespace InFluxEdit.Runtime.Gguf;

/// <summary>A GGUF file that cannot be read as it is: the message names the file, the problem and, where known, the fix.</summary>
public sealed class GgufException : IOException
{
    public GgufException(string path, string problem, string? fix = null)
        : base($"Cannot read GGUF file '{path}': {problem}" + (fix is null ? "" : $" {fix}"))
    {
        FilePath = path;
    }

    public string FilePath { get; }
}
