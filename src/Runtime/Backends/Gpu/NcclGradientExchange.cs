using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Sums the gradients over the ranks where they are, in GPU memory, with NCCL: one in-place all-reduce per tensor,
/// batched in one NCCL group and enqueued on the backend's stream behind the backward kernels, so the optimizer's
/// kernels that follow on that stream see the sums without a host round trip. Rank 0 makes the communicator's id and
/// MPI broadcasts it.
/// </summary>
public sealed class NcclGradientExchange : IGradientExchange
{
    private readonly IProcessGroup _group;
    private readonly IlgpuBackend _backend;
    private readonly NcclNative _nccl;
    private readonly nint _communicator;
    private readonly nint _stream;
    private bool _disposed;

    private NcclGradientExchange(IProcessGroup group, IlgpuBackend backend, NcclNative nccl, string library)
    {
        _group = group;
        _backend = backend;
        _nccl = nccl;
        var id = group.IsRoot ? nccl.NewUniqueId() : default;
        unsafe
        {
            group.Broadcast(new Span<byte>(&id, NcclNative.UniqueIdBytes), 0, "NCCL's communicator id");
        }
        backend.Accelerator.Bind();
        _communicator = nccl.InitRank(group.Size, id, group.Rank);
        _stream = ((CudaStream)backend.Accelerator.DefaultStream).StreamPtr;
        Description = $"NCCL all-reduce on the GPUs ({library})";
    }

    /// <summary>The exchange over NCCL, or null (with why) where the backend is not CUDA or NCCL is not installed.</summary>
    public static NcclGradientExchange? TryCreate(IProcessGroup group, IBackend backend, out string reason)
    {
        if (backend is not IlgpuBackend { Name: "cuda" } gpu)
        {
            reason = $"the {backend.Name} backend's tensors are in host memory";
            return null;
        }
        var nccl = NcclNative.TryLoad(out reason);
        return nccl == null ? null : new NcclGradientExchange(group, gpu, nccl, reason);
    }

    public string Description { get; }

    public void Sum(IReadOnlyList<TrainableParameter> parameters, Span<double> scalars, string what)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // The scalars through MPI first: it also tells rank 0 which ranks reached this exchange, so a hung rank is
        // named there rather than leaving the others waiting inside NCCL.
        _group.AllReduceSum(scalars.IsEmpty ? [0.0] : scalars, what);
        _backend.Accelerator.Bind();
        _nccl.GroupStart();
        try
        {
            foreach (var parameter in parameters)
            {
                var gradient = (GpuTensor)parameter.Gradient;
                _nccl.AllReduceSumInPlace(gradient.DevicePointer(0), gradient.Length, _communicator, _stream);
            }
        }
        finally
        {
            _nccl.GroupEnd();
        }
        if (_nccl.AsyncError(_communicator) is { } error)
            throw new ProcessGroupException($"rank {_group.Rank} on {_group.Host}: NCCL failed while summing {what}: {error}");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _nccl.Destroy(_communicator);
    }
}
