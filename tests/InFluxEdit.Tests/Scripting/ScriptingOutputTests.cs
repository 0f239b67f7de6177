using System.Diagnostics;
using System.Text.Json;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Tests.Fill;
using Shouldly;

namespace InFluxEdit.Tests.Scripting;

/// <summary>
/// influx-cli as scripts and CI logs see it: run as its own process with stdout and stderr redirected (so not a
/// terminal), --json prints exactly one object on stdout, --quiet prints nothing there, and no output holds an ANSI
/// escape sequence or a cursor movement.
/// </summary>
public class ScriptingOutputTests
{
    private sealed record CliRun(int ExitCode, string Stdout, string Stderr)
    {
        /// <summary>The one JSON object --json prints: stdout must be that and nothing else.</summary>
        public JsonElement Report()
        {
            var lines = Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            lines.Length.ShouldBe(1, $"stdout:\n{Stdout}\nstderr:\n{Stderr}");
            var report = JsonDocument.Parse(lines[0]).RootElement;
            report.ValueKind.ShouldBe(JsonValueKind.Object);
            return report;
        }
    }

    private static CliRun Run(params string[] arguments)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "influx-cli.dll"));
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"influx-cli {string.Join(' ', arguments)} ran over two minutes");
        }
        var run = new CliRun(process.ExitCode, stdout.Result, stderr.Result);
        // Plain text only: no escape sequence (colours, cursor movement) and no carriage return redrawing a line.
        foreach (string text in new[] { run.Stdout, run.Stderr })
        {
            text.ShouldNotContain('\u001b', $"influx-cli {string.Join(' ', arguments)} wrote an escape sequence:\n{text}");
            text.ShouldNotContain('\r', text);
        }
        return run;
    }

    private static void ShouldBeSuccess(JsonElement report, string command)
    {
        report.GetProperty("command").GetString().ShouldBe(command);
        report.GetProperty("exitCode").GetInt32().ShouldBe(0);
        report.GetProperty("error").ValueKind.ShouldBe(JsonValueKind.Null);
        report.GetProperty("seconds").GetProperty("total").GetDouble().ShouldBeGreaterThan(0);
    }

    private static List<string> Written(JsonElement report) => report.GetProperty("written").EnumerateArray().Select(p => p.GetString()!).ToList();

    [Fact]
    public void DoctorWithoutAGpuSaysWhyAndSucceeds()
    {
        if (Runtime.Backends.Gpu.IlgpuBackend.IsCudaAvailable())
            return; // with a GPU it builds every kernel: bench/gpu-check.sh's first row
        var run = Run("doctor", "--json");
        run.ExitCode.ShouldBe(0, run.Stderr);
        var report = run.Report();
        ShouldBeSuccess(report, "doctor");
        var result = report.GetProperty("result");
        result.GetProperty("cuda").GetBoolean().ShouldBeFalse();
        result.GetProperty("device").GetString().ShouldBe(Runtime.Backends.Gpu.IlgpuBackend.CudaAvailability);
        run.Stderr.ShouldContain("no CUDA device");
    }

    [Fact]
    public void ModelsPrintsAMarkdownTableOrOneJsonObjectOrNothing()
    {
        var plain = Run("models");
        plain.ExitCode.ShouldBe(0);
        var lines = plain.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines[0].ShouldStartWith("| model ");
        lines[1].ShouldStartWith("| -----");
        lines.Length.ShouldBe(2 + ModelCatalog.All.Count, plain.Stdout);

        var json = Run("models", "--json");
        json.ExitCode.ShouldBe(0);
        var report = json.Report();
        ShouldBeSuccess(report, "models");
        var models = report.GetProperty("result").GetProperty("models").EnumerateArray().ToList();
        models.Select(m => m.GetProperty("name").GetString()).ShouldBe(ModelCatalog.All.Select(m => m.Descriptor.Name));
        models.Select(m => m.GetProperty("parameters").GetInt64())
            .ShouldBe(ModelCatalog.All.Select(m => m.Descriptor.Parameters.Sum(p => p.Shape.Aggregate(1L, (n, d) => n * d))));
        json.Stderr.ShouldContain("| flux-fill-tiny "); // the table still goes somewhere a person can read it

        var quiet = Run("models", "--quiet");
        (quiet.ExitCode, quiet.Stdout, quiet.Stderr).ShouldBe((0, "", ""));
    }

    [Fact]
    public void DatasetReportsTheFolderItWroteAndIsSilentWhenQuiet()
    {
        using var dir = new TempDir();
        var json = Run("dataset", "circles", "--count", "2", "--held-out", "1", "--size", "32", "--seed", "3", "--out", dir.File("json"), "--json");
        json.ExitCode.ShouldBe(0, json.Stderr);
        var report = json.Report();
        ShouldBeSuccess(report, "dataset");
        Written(report).ShouldBe([dir.File("json")]);
        var result = report.GetProperty("result");
        (result.GetProperty("kind").GetString(), result.GetProperty("count").GetInt32(), result.GetProperty("heldOut").GetInt32())
            .ShouldBe(("circles", 2, 1));
        json.Stderr.ShouldContain("circles: 2 training pairs");

        var quiet = Run("dataset", "circles", "--count", "2", "--held-out", "1", "--size", "32", "--seed", "3", "--out", dir.File("quiet"), "--quiet");
        (quiet.ExitCode, quiet.Stdout, quiet.Stderr).ShouldBe((0, "", ""));
        Directory.GetFiles(dir.File("quiet/train"), "*", SearchOption.AllDirectories)
            .Select(Path.GetFileName).Order().ShouldBe(Directory.GetFiles(dir.File("json/train"), "*", SearchOption.AllDirectories).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void InspectReportsTheModelAndAnErrorAsAnObjectWithItsExitCode()
    {
        var json = Run("inspect", TestPaths.Golden("flux-tiny.safetensors"), "--json");
        json.ExitCode.ShouldBe(0, json.Stderr);
        var report = json.Report();
        ShouldBeSuccess(report, "inspect");
        report.GetProperty("result").GetProperty("model").GetString().ShouldBe("flux-fill-tiny");
        Written(report).ShouldBeEmpty();

        using var dir = new TempDir();
        string missing = dir.File("missing.safetensors");
        var failed = Run("inspect", missing, "--json");
        failed.ExitCode.ShouldBe(ErrorReport.ExitCode);
        var error = failed.Report().GetProperty("error");
        error.GetProperty("message").GetString()!.ShouldContain(missing);
        error.GetProperty("exitCode").GetInt32().ShouldBe(ErrorReport.ExitCode);
        failed.Stderr.ShouldStartWith("error: ");

        var quiet = Run("inspect", missing, "--quiet");
        quiet.ExitCode.ShouldBe(ErrorReport.ExitCode);
        quiet.Stdout.ShouldBeEmpty();
        quiet.Stderr.ShouldStartWith("error: "); // errors are never silenced
    }

    [Fact]
    public void WrongArgumentsUnderJsonStillGiveOneObject()
    {
        var run = Run("models", "--no-such-option", "--json");
        run.ExitCode.ShouldBe(1);
        var error = run.Report().GetProperty("error");
        error.GetProperty("message").GetString()!.ShouldContain("no-such-option");
        error.GetProperty("exitCode").GetInt32().ShouldBe(1);
    }

    [Fact]
    public void EditReportsTheImageItsSizeAndTimingsWithProgressAsPlainLinesOnStderr()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        string output = dir.File("out.png");
        var run = Run("edit", "--weights", TestPaths.Golden("flux-tiny.safetensors"), "--vae", TestPaths.Golden("vae-tiny.safetensors"),
            "--input", TestPaths.Golden("fill-tiny-image.png"), "--text-embeddings", FillGolden.WriteTextEmbeddings(dir),
            "--steps", "2", "--seed", "1", "--output", output, "--device", "cpu", "--json");
        run.ExitCode.ShouldBe(0, run.Stderr);
        var report = run.Report();
        ShouldBeSuccess(report, "edit");
        Written(report).ShouldBe([output]);
        File.Exists(output).ShouldBeTrue();
        var result = report.GetProperty("result");
        (result.GetProperty("width").GetInt32(), result.GetProperty("height").GetInt32(), result.GetProperty("seed").GetInt64())
            .ShouldBe((64, 48, 1L));
        report.GetProperty("seconds").GetProperty("sampling").GetDouble().ShouldBeGreaterThan(0);
        // The sampling stage's progress, as lines (the last one at 100%).
        run.Stderr.Split('\n').ShouldContain(line => line.StartsWith("denoising: 2/2 it (100%)", StringComparison.Ordinal), run.Stderr);
        run.Stderr.ShouldContain($"wrote {output}");
    }

    [Fact]
    public void HelpDocumentsQuietAndJson()
    {
        var help = Run("edit", "--help");
        help.ExitCode.ShouldBe(0);
        help.Stdout.ShouldContain("--quiet");
        help.Stdout.ShouldContain("--json");
    }

    [Fact]
    public void StageProgressInALogIsOneLineEveryTenthOfTheStage()
    {
        var log = new StringWriter();
        var progress = new StageProgressLines(log);
        for (int done = 0; done <= 1000; done++) progress.Report(new StageProgress("sampling", "steps", done, 1000));
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBe(11, log.ToString());
        lines.Select(l => l[..l.IndexOf(" (", StringComparison.Ordinal)])
            .ShouldBe(Enumerable.Range(0, 11).Select(i => $"sampling: {i * 100}/1000 steps"));
    }
}
