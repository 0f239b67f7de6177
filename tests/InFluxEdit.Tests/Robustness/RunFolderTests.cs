using System.Diagnostics;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Robustness;

/// <summary>A run folder keeps a second run out while one writes, keeps an earlier run's results, and sweeps away interrupted writes.</summary>
public class RunFolderTests
{
    private static RunFolderPolicy Policy(bool resuming = false, bool overwrite = false) =>
        new("--output", "checkpoint-*.safetensors", ["lora-*.safetensors"], resuming, overwrite);

    [Fact]
    public void ASecondRunIsRefusedWhileTheFirstHoldsTheFolderAndLetInAfter()
    {
        using var dir = new TempDir();
        string folder = dir.File("run");
        using (RunFolder.Claim(folder, Policy(), _ => { }))
        {
            File.ReadAllText(Path.Combine(folder, RunFolder.LockFileName)).ShouldStartWith(Environment.ProcessId + " ");
            Should.Throw<RunFolderInUseException>(() => RunFolder.Claim(folder, Policy(resuming: true), _ => { }))
                .Message.ShouldContain($"is in use by another run (process {Environment.ProcessId}");
        }
        File.Exists(Path.Combine(folder, RunFolder.LockFileName)).ShouldBeFalse();
        RunFolder.Claim(folder, Policy(), _ => { }).Dispose();
    }

    [Fact]
    public void TheLockOfADeadProcessIsTakenOverWithANote()
    {
        using var dir = new TempDir();
        using var finished = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        finished.WaitForExit();
        Directory.CreateDirectory(dir.Path);
        File.WriteAllText(dir.File(RunFolder.LockFileName), $"{finished.Id} {DateTime.UtcNow.Ticks}");
        var notes = new List<string>();
        using (RunFolder.Claim(dir.Path, Policy(), notes.Add))
            notes.ShouldContain(n => n.Contains($"took over the lock of process {finished.Id}"));
    }

    [Fact]
    public void AnEarlierRunIsKeptUnlessResumedOrOverwritten()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("checkpoint-000004.safetensors"), "a");
        File.WriteAllText(dir.File("checkpoint-000008.safetensors"), "b");
        File.WriteAllText(dir.File("lora-channel-kohya.safetensors"), "c");
        var message = Should.Throw<RunFolderInUseException>(() => RunFolder.Claim(dir.Path, Policy(), _ => { })).Message;
        message.ShouldContain("holds another run (checkpoint-000004.safetensors, checkpoint-000008.safetensors, lora-channel-kohya.safetensors)");
        message.ShouldContain("--resume " + dir.File("checkpoint-000008.safetensors"));
        message.ShouldContain("--overwrite");
        File.ReadAllText(dir.File("checkpoint-000008.safetensors")).ShouldBe("b");

        RunFolder.Claim(dir.Path, Policy(resuming: true), _ => { }).Dispose();
        File.Exists(dir.File("checkpoint-000008.safetensors")).ShouldBeTrue();

        var notes = new List<string>();
        RunFolder.Claim(dir.Path, Policy(overwrite: true), notes.Add).Dispose();
        Directory.EnumerateFiles(dir.Path).ShouldBeEmpty();
        notes.ShouldContain("--overwrite: removed 3 files of the earlier run in " + dir.Path);
    }

    [Fact]
    public void TemporariesOfInterruptedAtomicWritesAreRemovedOnStart()
    {
        using var dir = new TempDir();
        // What SafeTensorsWriter ("NAME.tmp-HEX") and ImageFile (".NAME.GUID.tmp") leave when killed mid-write.
        Directory.CreateDirectory(dir.File("cache"));
        File.WriteAllText(dir.File("cache/pair.safetensors.tmp-0123456789ab"), "partial");
        File.WriteAllText(dir.File(".sheet.png.0123456789abcdef0123456789abcdef.tmp"), "partial");
        File.WriteAllText(dir.File("notes.tmp"), "mine");
        SafeTensorsWriter.Write(dir.File("cache/pair.safetensors"), new Dictionary<string, HostTensor> { ["x"] = new HostTensor(1) });

        var notes = new List<string>();
        RunFolder.Claim(dir.Path, Policy(), notes.Add).Dispose();

        Directory.EnumerateFiles(dir.Path, "*", SearchOption.AllDirectories).Select(Path.GetFileName).Order(StringComparer.Ordinal)
            .ShouldBe(new[] { "notes.tmp", "pair.safetensors" });
        notes.ShouldContain(n => n.StartsWith("removed 2 temporary files of interrupted writes", StringComparison.Ordinal));
    }
}
