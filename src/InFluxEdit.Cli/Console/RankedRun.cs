using InFluxEdit.Runtime.Distributed;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// A command run by every rank of an MPI job: an error on any rank is printed with the rank's name and ends the
/// whole job at once (the others would otherwise wait for it at the next exchange); an error every rank finds alike
/// is printed by rank 0 alone, and the ranks end normally.
/// </summary>
public static class RankedRun
{
    public static int Run(IProcessGroup group, Func<int> command)
    {
        if (group.Size == 1) return command();
        try
        {
            return command();
        }
        catch (ProcessGroupException e) when (e.SeenByEveryRank)
        {
            // Every rank stops here alike: they end normally, and rank 0 speaks for them.
            if (group.IsRoot) Report(group, e);
            return ErrorReport.ExitCode;
        }
        catch (Exception e)
        {
            Report(group, e);
            // mpirun stops forwarding output once a rank aborts: give the line time to reach it.
            Thread.Sleep(TimeSpan.FromSeconds(1));
            group.Abort(ErrorReport.ExitCode);
            return ErrorReport.ExitCode;
        }
    }

    private static void Report(IProcessGroup group, Exception e)
    {
        System.Console.Error.WriteLine($"rank {group.Rank} of {group.Size} on {group.Host}: {ErrorReport.Format(e, Program.Verbose)}");
        System.Console.Error.Flush();
    }
}
