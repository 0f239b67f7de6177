using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using InFluxEdit.Runtime.IO;

namespace InFluxEdit.Runtime.Training;

/// <summary>Another run holds the folder's lock, or the folder holds another run's results.</summary>
public sealed class RunFolderInUseException(string message) : IOException(message);

/// <summary>
/// What a run folder protects. <paramref name="CheckpointPattern"/> and <paramref name="ResultPatterns"/> are the
/// file name patterns ("checkpoint-*.safetensors") of the files a run writes at the top of the folder: a new run is
/// refused where they exist unless it continues them (<paramref name="Resuming"/>) or replaces them
/// (<paramref name="Overwrite"/>). <paramref name="Option"/> is how the user named the folder, for messages.
/// </summary>
public sealed record RunFolderPolicy(string Option, string CheckpointPattern, IReadOnlyList<string> ResultPatterns, bool Resuming, bool Overwrite);

/// <summary>
/// A run's output folder, held for the run: a lock file names the process that writes into it, so a second run into
/// the same folder is refused while the first lives (a lock left by a process that died is taken over with a note);
/// the results of an earlier run are kept unless the new run continues or explicitly replaces them; and temporary
/// files that interrupted atomic writes left behind are removed, since no other writer can be using them.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFileName = ".influx-run.lock";

    /// <summary>
    /// The temporaries of the runtime's atomic writes (AtomicFile's "NAME.tmp-HEX", renamed over NAME once complete),
    /// and the ".NAME.GUID.tmp" images of earlier builds, which wrote images atomically on their own.
    /// </summary>
    private static readonly Regex InterruptedWrite = new(@"(\.tmp-[0-9a-f]{12}$)|(^\..+\.[0-9a-f]{32}\.tmp$)", RegexOptions.CultureInvariant);

    private readonly string _lockPath;
    private readonly string _lockText;

    private RunFolder(string folder, string lockPath, string lockText)
    {
        Folder = folder;
        _lockPath = lockPath;
        _lockText = lockText;
    }

    public string Folder { get; }

    /// <summary>Creates the folder if needed, takes its lock and applies <paramref name="policy"/>; <paramref name="note"/> hears what was cleaned up.</summary>
    public static RunFolder Claim(string folder, RunFolderPolicy policy, Action<string> note)
    {
        PathChecks.CreateFolder(folder, policy.Option);
        string lockPath = Path.Combine(folder, LockFileName);
        using var self = Process.GetCurrentProcess();
        string lockText = string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId} {self.StartTime.ToUniversalTime().Ticks}");
        TakeLock(folder, lockPath, lockText, policy.Option, note);
        var run = new RunFolder(folder, lockPath, lockText);
        try
        {
            run.RemoveInterruptedWrites(note);
            run.ProtectEarlierRun(policy, note);
            return run;
        }
        catch
        {
            run.Dispose();
            throw;
        }
    }

    private static void TakeLock(string folder, string lockPath, string lockText, string option, Action<string> note)
    {
        // Two tries: the second after removing a lock whose process is gone (another process may win that race).
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var stream = new FileStream(lockPath, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
                using var writer = new StreamWriter(stream);
                writer.Write(lockText);
                return;
            }
            catch (IOException) when (File.Exists(lockPath) && attempt == 0)
            {
                string holder = ReadLock(lockPath);
                if (HolderIsAlive(holder, out int pid))
                    throw new RunFolderInUseException(
                        $"{option} {folder} is in use by another run (process {pid}, see its {LockFileName}): wait for it to end, or choose another {option}");
                note($"{folder}: took over the lock of process {(pid > 0 ? pid.ToString(CultureInfo.InvariantCulture) : "?")}, which is no longer running");
                File.Delete(lockPath);
            }
        }
    }

    private static string ReadLock(string lockPath)
    {
        try
        {
            return File.ReadAllText(lockPath);
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Whether the process a lock names still runs (the same process: its start time guards against a reused id).</summary>
    private static bool HolderIsAlive(string lockText, out int pid)
    {
        pid = 0;
        string[] parts = lockText.Trim().Split(' ');
        if (parts.Length != 2 || !int.TryParse(parts[0], CultureInfo.InvariantCulture, out pid)
            || !long.TryParse(parts[1], CultureInfo.InvariantCulture, out long startTicks))
            return false;
        try
        {
            using var process = Process.GetProcessById(pid);
            return process.StartTime.ToUniversalTime().Ticks == startTicks;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Running, but its start time cannot be read (another user's): count it as the holder.
            return true;
        }
    }

    private void RemoveInterruptedWrites(Action<string> note)
    {
        var stale = Directory.EnumerateFiles(Folder, "*", SearchOption.AllDirectories)
            .Where(path => InterruptedWrite.IsMatch(Path.GetFileName(path))).ToList();
        foreach (string path in stale) File.Delete(path);
        if (stale.Count > 0)
            note($"removed {stale.Count} temporary file{(stale.Count == 1 ? "" : "s")} of interrupted writes in {Folder} ({string.Join(", ", stale.Take(3).Select(Path.GetFileName))}{(stale.Count > 3 ? ", …" : "")})");
    }

    private void ProtectEarlierRun(RunFolderPolicy policy, Action<string> note)
    {
        if (policy.Resuming) return;
        var earlier = policy.ResultPatterns.Prepend(policy.CheckpointPattern)
            .SelectMany(pattern => Directory.EnumerateFiles(Folder, pattern, SearchOption.TopDirectoryOnly))
            .Distinct().Order(StringComparer.Ordinal).ToList();
        if (earlier.Count == 0) return;
        if (!policy.Overwrite)
        {
            string? latest = Directory.EnumerateFiles(Folder, policy.CheckpointPattern).Max(StringComparer.Ordinal);
            throw new RunFolderInUseException(
                $"{policy.Option} {Folder} holds another run ({string.Join(", ", earlier.Take(3).Select(Path.GetFileName))}{(earlier.Count > 3 ? ", …" : "")}): " +
                (latest != null ? $"continue it with --resume {latest}, " : "") + $"replace it with --overwrite, or choose another {policy.Option}");
        }
        foreach (string path in earlier) File.Delete(path);
        note($"--overwrite: removed {earlier.Count} file{(earlier.Count == 1 ? "" : "s")} of the earlier run in {Folder}");
    }

    /// <summary>Releases the lock (only if it is still this run's).</summary>
    public void Dispose()
    {
        if (ReadLock(_lockPath) == _lockText) File.Delete(_lockPath);
    }
}
