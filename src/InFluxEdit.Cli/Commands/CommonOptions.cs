using CommandLine;
using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Cli.Commands;

public abstract class DeviceOptions
{
    [Option("device", Default = "auto", HelpText = "Where to run: auto (CUDA when a GPU is present, else CPU), cpu or cuda.")]
    public string Device { get; set; } = "auto";

    /// <summary>Creates the backend and says which one runs.</summary>
    public IBackend CreateBackend(TextWriter log)
    {
        var backend = BackendFactory.Create(BackendFactory.ParseChoice(Device));
        log.WriteLine($"device: {backend.Description}");
        return backend;
    }
}
