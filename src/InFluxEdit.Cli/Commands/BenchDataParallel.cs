using System.Globalization;
using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Console;
using InFluxEdit.Runtime.Distributed;

namespace InFluxEdit.Cli.Commands;

/// <summary><c>bench train --ranks N</c> under mpirun: every rank runs it, rank 0 prints the table.</summary>
public static class BenchDataParallel
{
    public static int Run(BenchOptions options, BenchSettings settings)
    {
        using var group = ProcessGroups.FromEnvironment(ProcessGroups.DefaultTimeout);
        if (group.Size != options.Ranks)
            throw new ArgumentException(group.Size == 1
                ? $"--ranks {options.Ranks}: start the benchmark under MPI, e.g. mpirun -np {options.Ranks} influx-cli bench train --ranks {options.Ranks}"
                : $"--ranks {options.Ranks}, but mpirun started {group.Size} ranks: give the same number to both");
        return RankedRun.Run(group, () =>
        {
            var output = options.CommandOutput;
            using var backend = options.CreateBackend(output.Log, group.LocalRank);
            var result = DataParallelBench.Run(settings, backend, group, output.Stages);
            output.Result = result;
            static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);
            var table = output.Table("model", "device", "tokens", "ranks", "examples per rank", "ms per step (1 rank)", "ms per step (all)",
                "exchange ms per step", "examples/s per rank", "examples/s in all", "scaling efficiency");
            table.AddCells(result.Model, result.Device, $"{options.ImageTokens}+{options.TextTokens}", result.Ranks.ToString(CultureInfo.InvariantCulture),
                result.ExamplesPerRank.ToString(CultureInfo.InvariantCulture), F(result.SingleRankStepMs, "F1"), F(result.SharedStepMs, "F1"),
                F(result.ExchangeMs, "F2"), F(result.ExamplesPerSecondPerRank, "F2"), F(result.ExamplesPerSecondPerRank * result.Ranks, "F2"),
                F(result.ScalingEfficiency * 100, "F0") + " %");
            output.Log.WriteLine($"data-parallel LoRA steps ({settings.Preset}, rank {settings.Rank}; {result.GradientValues:N0} gradient values " +
                                 $"summed over the ranks each step by {result.Exchange}), median of {settings.Runs} after {settings.Warmup} warm-up; " +
                                 "the one-rank column is rank 0 training alone in the same run");
            output.Write(table);
            return 0;
        });
    }
}
