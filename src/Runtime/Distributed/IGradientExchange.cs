using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Distributed;

/// <summary>How a data-parallel run sums every rank's gradients (and a few host values, such as the loss) each step.</summary>
public interface IGradientExchange : IDisposable
{
    /// <summary>What carries the sums, for the log.</summary>
    string Description { get; }

    /// <summary>Replaces every gradient and every value of <paramref name="scalars"/>, on every rank, by its sum over the ranks.</summary>
    void Sum(IReadOnlyList<TrainableParameter> parameters, Span<double> scalars, string what);
}

/// <summary>The gradients staged through host memory and summed by MPI, in buckets (any backend).</summary>
public sealed class HostGradientExchange(IProcessGroup group, IBackend backend) : IGradientExchange
{
    public string Description => $"MPI all-reduce in host memory over {group.Size} ranks";

    public void Sum(IReadOnlyList<TrainableParameter> parameters, Span<double> scalars, string what) =>
        group.AllReduceGradients(backend, parameters, scalars, what);

    public void Dispose() { }
}

public static class GradientExchange
{
    /// <summary>
    /// The exchange for <paramref name="backend"/>'s tensors: NCCL on the GPUs where the backend is CUDA and NCCL is
    /// installed, else MPI through host memory (<paramref name="note"/> hears why NCCL was passed over).
    /// </summary>
    public static IGradientExchange Create(IProcessGroup group, IBackend backend, Action<string>? note = null)
    {
        var nccl = NcclGradientExchange.TryCreate(group, backend, out string reason);
        if (nccl != null) return nccl;
        if (backend.Name == "cuda") note?.Invoke($"gradients go through host memory: {reason}");
        return new HostGradientExchange(group, backend);
    }
}
