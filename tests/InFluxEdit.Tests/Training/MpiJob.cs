using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// influx-cli started under Open MPI's mpirun (Debian's openmpi-bin, which .ci/run installs), with its output
/// collected and its ranks findable: every rank carries a marker variable naming this job.
/// </summary>
public sealed class MpiJob : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly string _marker = Guid.NewGuid().ToString("N");

    /// <param name="ranks">One argument list per group of ranks (mpirun's MPMD form, "A : B"); each entry gives its rank count.</param>
    public MpiJob(params (int Ranks, string[] Arguments)[] ranks)
    {
        string mpirun = FindMpirun() ?? throw new FileNotFoundException("mpirun is not on PATH: install Open MPI (apt-get install openmpi-bin)");
        var start = new ProcessStartInfo(mpirun) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // Tests run as root in CI containers; Open MPI refuses root unless told twice.
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        start.Environment["INFLUXEDIT_TEST_JOB"] = _marker;
        start.ArgumentList.Add("--oversubscribe");
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        string cli = Path.Combine(AppContext.BaseDirectory, "influx-cli.dll");
        for (int group = 0; group < ranks.Length; group++)
        {
            if (group > 0) start.ArgumentList.Add(":");
            foreach (string arg in new[] { "-np", ranks[group].Ranks.ToString(CultureInfo.InvariantCulture), dotnet, cli }.Concat(ranks[group].Arguments))
                start.ArgumentList.Add(arg);
        }
        _process = Process.Start(start)!;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output
    {
        get
        {
            lock (_output) return _output.ToString();
        }
    }

    private void Append(string? line)
    {
        if (line == null) return;
        lock (_output)
        {
            _output.AppendLine(line);
            Monitor.PulseAll(_output);
        }
    }

    /// <summary>mpirun's path, or null where Open MPI is not installed.</summary>
    public static string? FindMpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(folder => Path.Combine(folder, "mpirun")).FirstOrDefault(File.Exists);

    /// <summary>Waits until the output holds a line matching <paramref name="line"/>; false after <paramref name="timeout"/>.</summary>
    public bool WaitForLine(Func<string, bool> line, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        lock (_output)
            while (!_output.ToString().Split('\n').Any(l => line(l.TrimEnd('\r'))))
            {
                if (clock.Elapsed > timeout) return false;
                // After the exit only the output readers' last lines can still come.
                if (_process.HasExited && clock.Elapsed > TimeSpan.FromSeconds(1) && !Monitor.Wait(_output, 500)) return false;
                Monitor.Wait(_output, 200);
            }
        return true;
    }

    /// <summary>Waits for mpirun to end; its exit code, or null when it is still running after <paramref name="timeout"/>.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) return null;
        _process.WaitForExit(); // the output readers finish
        return _process.ExitCode;
    }

    /// <summary>The process id of rank <paramref name="rank"/> of this job (Linux: read from /proc).</summary>
    public int RankProcess(int rank)
    {
        foreach (string folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(folder), CultureInfo.InvariantCulture, out int pid) || pid == _process.Id) continue;
            string environment;
            try
            {
                environment = File.ReadAllText(Path.Combine(folder, "environ"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            var variables = environment.Split('\0');
            if (variables.Contains("INFLUXEDIT_TEST_JOB=" + _marker) && variables.Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
        }
        throw new InvalidOperationException($"no process of rank {rank} found:\n{Output}");
    }

    /// <summary>Sends <paramref name="signal"/> to mpirun itself, as Ctrl-C or a batch system would.</summary>
    public void SignalLauncher(string signal) => Signal(_process.Id, signal);

    public static void Signal(int pid, string signal) => Process.Start("kill", ["-" + signal, pid.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
        _process.Dispose();
    }
}
