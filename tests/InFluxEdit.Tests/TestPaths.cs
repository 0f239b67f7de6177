namespace InFluxEdit.Tests;

/// <summary>Where the repository and the shared golden data are, found from the test assembly's folder.</summary>
public static class TestPaths
{
    private static readonly Lazy<string> Root = new(FindRepoRoot);

    /// <summary>The folder holding InFluxEdit.sln.</summary>
    public static string RepoRoot => Root.Value;

    public static string SchemasDir => Path.Combine(RepoRoot, "schemas");

    /// <summary>tests/golden: the repository's copy of the reference tensors computed by the public FLUX, CLIP and T5 code.</summary>
    public static string GoldenDir => Path.Combine(RepoRoot, "tests", "golden");

    public static string Golden(string fileName) => Path.Combine(GoldenDir, fileName);

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "InFluxEdit.sln")))
                return dir.FullName;
        }
        throw new DirectoryNotFoundException($"No folder above {AppContext.BaseDirectory} holds InFluxEdit.sln; run the tests from the repository.");
    }
}

/// <summary>A fresh folder under the system temp folder, deleted with everything in it on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "influxedit-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
