using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Devices;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Cli.Commands;

[Verb("doctor", HelpText = "Check the GPU before a long run: finds the CUDA device, its free memory and cuBLAS, and builds every GPU kernel of this build with the driver (the runtime's kernels and each model's fused kernels) as a first launch would. Prints each kernel family's registers and spills, and every kernel the driver rejects with ptxas's message. Exit code 1 when a kernel does not build. Without a CUDA device it says why and what runs instead.")]
public sealed class DoctorOptions : OutputOptions
{
    [Option("gpu", Default = 0, HelpText = "Which CUDA device to check (0 is the first).")]
    public int Gpu { get; set; }

    [Option("kernels", HelpText = "List every kernel (registers, local memory per thread, shared memory, most threads per group), not only each family's summary.")]
    public bool EveryKernel { get; set; }
}

public static class DoctorCommand
{
    /// <summary>What 'doctor --json' reports.</summary>
    public sealed record DoctorReport(bool Cuda, string Device, long? FreeBytes, long? TotalBytes,
        IReadOnlyList<KernelFamilySummary> Families, IReadOnlyList<KernelBuild> Kernels);

    public static int Run(DoctorOptions options)
    {
        var output = options.CommandOutput;
        if (!IlgpuBackend.IsCudaAvailable())
        {
            output.Log.WriteLine($"no CUDA device: {IlgpuBackend.CudaAvailability}. Every command runs on the CPU backend instead (--device cpu; slower).");
            output.Result = new DoctorReport(false, IlgpuBackend.CudaAvailability, null, null, [], []);
            return 0;
        }
        using var backend = IlgpuBackend.CreateCuda(options.Gpu, GpuPrecision.BFloat16, output.Log.WriteLine);
        output.Log.WriteLine($"device: {backend.Description}");
        var memory = backend.DeviceMemory();
        if (memory is var (free, total))
            output.Log.WriteLine($"memory: {free / GiB:F1} GiB free of {total / GiB:F1} GiB");
        var builds = KernelBuildCheck.Run(backend, output.Stages);
        var families = KernelBuildCheck.Summarize(builds);

        var table = output.Table("kernels", "built", "most registers", "spilling", "most shared KB");
        foreach (var family in families)
            table.AddCells(family.Family, $"{family.Built}/{family.Kernels}", family.MostRegisters.ToString(), family.Spilling.ToString(),
                $"{family.MostSharedBytes / 1024.0:F1}");
        output.Write(table);
        if (options.EveryKernel)
        {
            var kernels = output.Table("kernel", "registers", "local B/thread", "shared KB", "max threads");
            foreach (var build in builds.Where(b => b.Built))
                kernels.AddCells(build.Kernel, build.Registers.ToString(), build.LocalBytesPerThread.ToString(), $"{build.SharedBytes / 1024.0:F1}",
                    build.MaxThreadsPerGroup.ToString());
            output.Write(kernels);
        }
        var failed = builds.Where(b => !b.Built).ToList();
        foreach (var build in failed)
            output.Log.WriteLine($"FAILED {build.Kernel} ({build.Family}): {build.Error}");
        output.Log.WriteLine(failed.Count == 0
            ? $"all {builds.Count} kernels built"
            : $"{failed.Count} of {builds.Count} kernels did not build: the commands that launch them will fail on this device");
        output.Result = new DoctorReport(true, backend.Description, memory?.Free, memory?.Total, families, builds);
        return failed.Count == 0 ? 0 : 1;
    }

    private const double GiB = 1024.0 * 1024 * 1024;
}
