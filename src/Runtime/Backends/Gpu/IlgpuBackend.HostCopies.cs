using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace InFluxEdit.Runtime.Backends.Gpu;

// Activations moved to host memory while they wait for the backward pass (ITrainingBackend.MoveToHost).
public sealed partial class IlgpuBackend
{
    /// <summary>
    /// Host buffers no moved tensor holds, by length: a training step moves the same sizes every step, and page-locking
    /// memory costs far more than the copy, so the buffers are kept for the next step.
    /// </summary>
    private readonly Dictionary<long, Stack<HostBuffer>> parkedHostBuffers = new();

    public void MoveToHost(DeviceTensor tensor)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        Movable(tensor).MoveToHost();
    }

    public void MoveToDevice(DeviceTensor tensor)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        Movable(tensor).MoveToDevice();
    }

    private GpuTensor Movable(DeviceTensor tensor) => tensor is GpuTensor gpu && ReferenceEquals(gpu.Owner, this)
        ? gpu
        : throw new ArgumentException($"{tensor} was not allocated by this backend", nameof(tensor));

    internal MemoryBuffer1D<float, Stride1D.Dense> RentFloats(long length) => floatPool.Rent(length);

    internal MemoryBuffer1D<ushort, Stride1D.Dense> RentWords(long length) => wordPool.Rent(length);

    internal HostBuffer RentHostBuffer(long length)
    {
        lock (parkedHostBuffers)
            if (parkedHostBuffers.TryGetValue(length, out var stack) && stack.Count > 0)
                return stack.Pop();
        return HostBuffer.Allocate(accelerator, length, pin: accelerator is CudaAccelerator);
    }

    /// <summary>
    /// Keeps host bytes for the next move of their size. A copy into or out of them may still be queued: the next copy
    /// that uses them is queued on the same stream, after it.
    /// </summary>
    internal void ReturnHostBuffer(HostBuffer host)
    {
        if (disposed)
        {
            host.Dispose();
            return;
        }
        lock (parkedHostBuffers)
        {
            if (!parkedHostBuffers.TryGetValue(host.Length, out var stack))
                parkedHostBuffers[host.Length] = stack = new Stack<HostBuffer>();
            stack.Push(host);
        }
    }

    /// <summary>Frees the kept host bytes once the copies queued on them are done.</summary>
    private void FreeHostBuffers()
    {
        lock (parkedHostBuffers)
        {
            if (parkedHostBuffers.Count == 0)
                return;
            accelerator.Bind();
            accelerator.Synchronize();
            foreach (var host in parkedHostBuffers.Values.SelectMany(stack => stack))
                host.Dispose();
            parkedHostBuffers.Clear();
        }
    }
}
