namespace InFluxEdit.Runtime.IO;

/// <summary>A path of the wrong kind: a folder where a file is expected, or a file where a folder is.</summary>
public sealed class PathKindException(string message) : IOException(message);

/// <summary>
/// Checks of the paths a user gives, so that a wrong kind of path is reported as such (a folder given as a file is
/// otherwise "access denied", a file given as a folder "does not exist" or "already exists").
/// </summary>
public static class PathChecks
{
    /// <param name="what">How the user gave it, e.g. "--flux-dir".</param>
    public static void RequireFolder(string path, string what)
    {
        if (Directory.Exists(path)) return;
        if (File.Exists(path)) throw new PathKindException($"{what} {path} is a file; give the folder (e.g. the one that holds it)");
        throw new DirectoryNotFoundException($"{what} {path} does not exist");
    }

    /// <param name="what">How the user gave it, e.g. "image file".</param>
    public static void RequireFile(string path, string what)
    {
        if (File.Exists(path)) return;
        if (Directory.Exists(path)) throw new PathKindException($"{what} '{path}' is a folder; give a file (one inside it)");
        throw new FileNotFoundException($"{what} '{path}' does not exist", path);
    }

    /// <summary>Creates an output folder (and its parents); a file in its place is an error that says so.</summary>
    public static void CreateFolder(string path, string what)
    {
        string? blocking = Path.GetFullPath(path);
        while (blocking != null && !Directory.Exists(blocking))
        {
            if (File.Exists(blocking))
                throw new PathKindException(blocking == Path.GetFullPath(path)
                    ? $"{what} {path} is a file; give a folder (a new one is created)"
                    : $"{what} {path} cannot be created: {blocking} is a file; give another folder");
            blocking = Path.GetDirectoryName(blocking);
        }
        Directory.CreateDirectory(path);
    }
}
