namespace InFluxEdit.Runtime.Models;

/// <summary>
/// Checkpoint files that do not fit a model's parameter table. The message lists every problem at once, so one
/// run tells the user everything wrong. An <see cref="IOException"/> because <see cref="InvalidDataException"/> is sealed.
/// </summary>
public sealed class WeightMismatchException : IOException
{
    public WeightMismatchException(
        string message,
        IReadOnlyList<string> missingKeys,
        IReadOnlyList<string> unexpectedKeys,
        IReadOnlyList<string> misShapedKeys,
        IReadOnlyList<string> keysInSeveralFiles,
        IReadOnlyList<string> unloadableKeys)
        : base(message)
    {
        MissingKeys = missingKeys;
        UnexpectedKeys = unexpectedKeys;
        MisShapedKeys = misShapedKeys;
        KeysInSeveralFiles = keysInSeveralFiles;
        UnloadableKeys = unloadableKeys;
    }

    public IReadOnlyList<string> MissingKeys { get; }
    public IReadOnlyList<string> UnexpectedKeys { get; }
    public IReadOnlyList<string> MisShapedKeys { get; }
    public IReadOnlyList<string> KeysInSeveralFiles { get; }

    /// <summary>Keys present with the right shape but stored in a dtype that is not floating point (integers, fp8).</summary>
    public IReadOnlyList<string> UnloadableKeys { get; }
}
