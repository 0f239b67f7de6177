namespace InFluxEdit.Tests;

/// <summary>Where the repository and the shared golden vectors are, found from the test binary's folder.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SchemasDir => Path.Combine(RepoRoot, "schemas");

    public static string GoldenDir
    {
        get
        {
            string dir = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "golden"));
            if (!File.Exists(Path.Combine(dir, "manifest.json")))
                throw new DirectoryNotFoundException(
                    $"the golden vectors are missing: expected {dir}/manifest.json (../shared/golden beside the repository)");
            return dir;
        }
    }

    public static string Golden(string fileName) => Path.Combine(GoldenDir, fileName);

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "InFluxEdit.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"InFluxEdit.sln not found above {AppContext.BaseDirectory}");
    }
}
