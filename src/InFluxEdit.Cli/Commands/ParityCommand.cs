using System.Globalization;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Cli.Commands;

[Verb("parity", HelpText = "Check this build against reference vectors: runs every case of DIR/manifest.json that the build supports and prints each tensor's relative L2 error against its tolerance (with --device cuda --precision bf16: at least 1e-2, the bf16 bar).")]
public sealed class ParityOptions : DeviceOptions
{
    [Value(0, MetaName = "DIR", Required = false, HelpText = "Folder with manifest.json and the golden files (default: tests/golden, the repository's copy).")]
    public string Directory { get; set; } = "tests/golden";

    [Option("out", HelpText = "Write OUT/<case>.safetensors with every computed tensor, named as in the golden file without 'expected.'.")]
    public string? OutDir { get; set; }

    [Option("case", HelpText = "Run only the cases whose name contains this text.")]
    public string? CaseFilter { get; set; }

    /// <summary>Parity checks the exact path unless told otherwise: --precision auto is fp32 here.</summary>
    protected override GpuPrecision AutoPrecision => GpuPrecision.Float32;
}

public static class ParityCommand
{
    /// <summary>What 'parity --json' reports: the counts and every tensor compared.</summary>
    public sealed record ParitySummary(int Passed, int Failed, int Skipped, IReadOnlyList<ParityRow> Rows);

    public static int Run(ParityOptions options)
    {
        var output = options.CommandOutput;
        var manifest = GoldenManifest.Load(options.Directory);
        using var backend = options.CreateBackend(output.Log);
        // bf16 precision is checked against the bf16 bar, not float32's tolerances (the CPU ignores the precision).
        bool bf16 = backend.Name == "cuda" && options.PrecisionInEffect == GpuPrecision.BFloat16;
        var runner = new ParityRunner(manifest, backend) { ToleranceFloor = bf16 ? ParityRunner.BFloat16Tolerance : 0 };
        var table = output.Table("case", "tensor", "rel L2", "tolerance", "ok");
        var rows = new List<ParityRow>();
        int failed = 0, passed = 0, skipped = 0;
        foreach (var goldenCase in manifest.Cases.Where(c => options.CaseFilter == null || c.Name.Contains(options.CaseFilter)))
        {
            output.Notes.WriteLine($"running {goldenCase.Name} ({goldenCase.Kind})");
            foreach (var row in runner.Run(goldenCase, options.OutDir))
            {
                string ok = row.Status switch
                {
                    ParityStatus.Passed => "ok",
                    ParityStatus.Failed => "FAIL",
                    _ => "skipped",
                };
                rows.Add(row);
                table.AddCells(row.Case, row.Tensor, Format(row.Error), Format(row.Tolerance), row.Note == null ? ok : $"{ok}: {row.Note}");
                switch (row.Status)
                {
                    case ParityStatus.Passed: passed++; break;
                    case ParityStatus.Failed: failed++; break;
                    default: skipped++; break;
                }
            }
        }
        output.Write(table);
        output.Log.WriteLine($"parity: {passed} passed, {failed} failed, {skipped} skipped");
        if (options.OutDir != null) output.Log.WriteLine($"computed tensors written to {Path.GetFullPath(options.OutDir)}");
        output.Wrote(options.OutDir);
        output.Result = new ParitySummary(passed, failed, skipped, rows);
        if (failed > 0) output.Failure = $"{failed} tensors differ from the reference beyond their tolerance";
        return failed == 0 ? 0 : 1;
    }

    private static string Format(double value) =>
        double.IsNaN(value) ? "-" : value.ToString("0.00e+00", CultureInfo.InvariantCulture);
}
