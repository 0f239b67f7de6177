using System.Diagnostics;
using InFluxEdit.Fuzz;
using Shouldly;

namespace InFluxEdit.Tests.Fuzz;

/// <summary>
/// Every input the fuzzers kept (tests/fuzz-corpus/TARGET: seeds, the minimised corpus, and each crash or hang they
/// found, since fixed) replayed through the same entry points as tests/Fuzz/run.sh: each must end in a result or the
/// reader's documented clear error, and quickly (a hang found by AFL++ shows up here as a slow input).
/// </summary>
public class FuzzCorpusReplayTests
{
    private static readonly TimeSpan SlowestInput = TimeSpan.FromSeconds(10);

    public static TheoryData<string> Targets()
    {
        var data = new TheoryData<string>();
        foreach (string target in FuzzTargets.Names) data.Add(target);
        return data;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Every_kept_input_ends_in_a_result_or_a_clear_error(string target)
    {
        string folder = Path.Combine(TestPaths.RepoRoot, "tests", "fuzz-corpus", target);
        var inputs = Directory.Exists(folder) ? Directory.GetFiles(folder) : [];
        inputs.ShouldNotBeEmpty($"{folder} holds no inputs: tests/Fuzz/make-seeds.py writes the seeds");
        using var dir = new TempDir();
        var failures = new List<string>();
        foreach (string input in inputs.Order(StringComparer.Ordinal))
        {
            var clock = Stopwatch.StartNew();
            try
            {
                FuzzTargets.Run(target, File.ReadAllBytes(input), dir.Path);
            }
            catch (Exception e)
            {
                failures.Add($"{Path.GetFileName(input)}: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
                continue;
            }
            if (clock.Elapsed > SlowestInput)
                failures.Add($"{Path.GetFileName(input)}: took {clock.Elapsed.TotalSeconds:F1} s");
        }
        failures.ShouldBeEmpty();
    }

    [Fact]
    public void Every_target_has_a_corpus_folder_and_nothing_else_is_there()
    {
        var folders = Directory.GetDirectories(Path.Combine(TestPaths.RepoRoot, "tests", "fuzz-corpus")).Select(Path.GetFileName);
        folders.Order(StringComparer.Ordinal).ShouldBe(FuzzTargets.Names.Order(StringComparer.Ordinal));
    }
}
