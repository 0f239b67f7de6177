using InFluxEdit.Fuzz;
using SharpFuzz;

// Under afl-fuzz (tests/Fuzz/run.sh) this is SharpFuzz's fork server running one target in a loop; run alone with a
// file it replays that file once: `dotnet InFluxEdit.Fuzz.dll TARGET < input`.
if (args.Length != 1 || !FuzzTargets.Names.Contains(args[0]))
{
    Console.Error.WriteLine($"usage: InFluxEdit.Fuzz TARGET < input   (TARGET: {string.Join(", ", FuzzTargets.Names)})");
    return 2;
}
string target = args[0];
// tmpfs where there is one: every execution writes its input as the file the reader opens.
string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
string workDir = Path.Combine(root, $"influxedit-fuzz-{target}-{Environment.ProcessId}");
Directory.CreateDirectory(workDir);
try
{
    Fuzzer.Run(stream =>
    {
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        FuzzTargets.Run(target, buffer.ToArray(), workDir);
    });
}
finally
{
    Directory.Delete(workDir, recursive: true);
}
return 0;
