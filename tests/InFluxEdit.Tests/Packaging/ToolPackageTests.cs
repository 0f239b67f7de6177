using System.Diagnostics;
using System.Runtime.InteropServices;
using InFluxEdit.Models;
using Shouldly;

namespace InFluxEdit.Tests.Packaging;

/// <summary>
/// `dotnet pack` of the CLI makes a .NET tool that installs from the package alone and runs outside the repository:
/// packed from this build into a temporary folder, installed into a temporary tool path from that folder only (no other
/// package source, so it works offline), then run from a folder that is not in the repository.
/// </summary>
public class ToolPackageTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    [Fact]
    public void ThePackedToolInstallsAndRunsFromAnyFolder()
    {
        using var dir = new TempDir();
        string packages = dir.File("packages"), tools = dir.File("tools"), elsewhere = dir.File("elsewhere");
        Directory.CreateDirectory(elsewhere);
        // The configuration this test assembly was built in: the CLI beside it was built the same way, so --no-build packs that build.
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        Dotnet(dir.Path, "pack", Path.Combine(TestPaths.RepoRoot, "src", "InFluxEdit.Cli", "InFluxEdit.Cli.csproj"), "--no-build", "-c", configuration, "-o", packages);
        string package = Path.GetFileName(Directory.GetFiles(packages, "InFluxEdit.Cli.*.nupkg").ShouldHaveSingleItem());
        string version = package["InFluxEdit.Cli.".Length..^".nupkg".Length];

        string config = dir.File("nuget.config");
        File.WriteAllText(config, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="packed" value="{packages}" />
              </packageSources>
            </configuration>
            """);
        Dotnet(dir.Path, "tool", "install", "InFluxEdit.Cli", "--tool-path", tools, "--configfile", config, "--version", version);

        string tool = Path.Combine(tools, "influx-cli");
        Run(elsewhere, tool, "--version").ShouldContain(version);
        string models = Run(elsewhere, tool, "models");
        foreach (var model in ModelCatalog.All) models.ShouldContain(model.Descriptor.Name);
        // The toy base ships inside the tool: a short demo finds it without the repository.
        string demo = Run(elsewhere, tool, "demo", "--steps", "2", "--count", "2", "--held-out", "1", "--out", "run", "--device", "cpu");
        demo.ShouldContain("held-out edits with the colours their captions name");
        File.Exists(Path.Combine(elsewhere, "run", "run", "validation", "step-000002", "contact-sheet.png")).ShouldBeTrue(demo);
    }

    private static string Dotnet(string workingDirectory, params string[] arguments) =>
        Run(workingDirectory, Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", arguments);

    private static string Run(string workingDirectory, string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        // The installed tool's launcher finds the runtime this test runs on.
        start.Environment["DOTNET_ROOT"] = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(Limit))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} ran over {Limit.TotalMinutes} minutes");
        }
        string output = stdout.Result + stderr.Result;
        process.ExitCode.ShouldBe(0, $"{program} {string.Join(' ', arguments)}:\n{output}");
        return output;
    }
}
