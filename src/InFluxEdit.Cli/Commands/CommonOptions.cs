using CommandLine;
using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Cli.Commands;

public abstract class DeviceOptions
{
    [Option("device", Default = "auto", HelpText = "Where to run: auto (CUDA when a GPU is present, else CPU), cpu or cuda.")]
    public string Device { get; set; } = "auto";

    [Option("precision", Default = "fp32", HelpText = "CUDA matrix products: fp32 (exact float32, for parity) or bf16 (bf16 inputs on tensor cores, float32 accumulation: the speed of the real model).")]
    public string Precision { get; set; } = "fp32";

    /// <summary>Creates the backend and says which one runs.</summary>
    public IBackend CreateBackend(TextWriter log)
    {
        var backend = BackendFactory.Create(BackendFactory.ParseChoice(Device), BackendFactory.ParsePrecision(Precision));
        log.WriteLine($"device: {backend.Description}");
        return backend;
    }
}
