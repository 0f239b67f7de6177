using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Weight offloading for models larger than the device: each offloaded weight's bytes live in host memory
/// (page-locked on CUDA, so copies run as DMA beside the kernels) and are copied into one device arena of a fixed
/// budget when an op first reads them. The arena is allocated once, so nothing is allocated or freed on the device
/// while a model runs (cudaMalloc and cudaFree both synchronise the device); bytes of any element type fit it.
///
/// Placement is a ring: a weight goes at the arena's cursor, evicting whatever it overlaps, and the cursor moves past
/// it. A model's pass reads its weights in the same order every time (a denoising step, a training step), and for
/// such a cycle the ring evicts exactly the weight read longest ago, as least-recently-used would, without slot
/// sizes to match or free space to defragment. Each weight remembers the one read after it last time; reading it
/// places the next few ahead of need (prefetch), within half the arena so they cannot evict one another.
///
/// The <see cref="ProtectedWeights"/> weights read most recently are never evicted: an op may hold device addresses
/// of the weights it reads (a product's two operands) until it launches, and evicting one in between would hand its
/// bytes to another weight under the op. No op reads more than two weights (a product's two operands). Protected weights can split the arena; a budget of five times the largest matrix always leaves a gap for the next (FLUX's largest bf16 matrix is 132 MB).
///
/// Ordering: on CUDA every copy runs on a second stream after an event recorded on the compute stream (so kernels
/// already enqueued have finished reading what it overwrites), and the compute stream waits for a weight's copy
/// before the first kernel that reads it. On the ILGPU simulator, which has no events, copies run on the compute
/// stream itself, in order with the kernels: the same placement, no overlap.
/// </summary>
internal sealed class WeightResidency : IDisposable
{
    /// <summary>Offsets in the arena are multiples of this: aligned for any element type and for cuBLAS.</summary>
    internal const long Alignment = 256;

    /// <summary>How many of the most recently read weights eviction leaves alone (see the class summary).</summary>
    internal const int ProtectedWeights = 2;

    /// <summary>How many weights ahead of the one read are placed ahead of need.</summary>
    internal const int PrefetchAhead = 4;

    private readonly Accelerator accelerator;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense> arena;
    private readonly ArenaCopies copies;
    private readonly bool pinHost;
    private readonly List<OffloadedWeight> resident = new();
    private readonly OffloadedWeight?[] recent = new OffloadedWeight?[ProtectedWeights];
    private readonly object gate = new();
    private long cursor;
    private bool disposed;

    public WeightResidency(Accelerator accelerator, long budgetBytes)
    {
        if (budgetBytes < Alignment)
            throw new ArgumentException($"a weight offload budget of {budgetBytes} bytes is too small to hold any weight: give at least a few MiB");
        this.accelerator = accelerator;
        accelerator.Bind();
        arena = accelerator.Allocate1D<byte>(budgetBytes);
        pinHost = accelerator is CudaAccelerator;
        copies = accelerator is CudaAccelerator cuda ? new CopyStreamCopies(cuda) : new ComputeStreamCopies(accelerator);
    }

    /// <summary>Device bytes the arena takes: the budget, allocated once.</summary>
    public long BudgetBytes => arena.LengthInBytes;

    /// <summary>Bytes of weights in the arena now (never more than <see cref="BudgetBytes"/>).</summary>
    public long ResidentBytes { get; private set; }

    /// <summary>The most <see cref="ResidentBytes"/> has been.</summary>
    public long PeakResidentBytes { get; private set; }

    /// <summary>Weights registered and not yet released, and their host bytes.</summary>
    public int Weights { get; private set; }
    public long HostBytes { get; private set; }

    /// <summary>Weights and their bytes registered since the arena was made, released or not: what offloading took on.</summary>
    public int OffloadedWeights { get; private set; }
    public long OffloadedBytes { get; private set; }

    /// <summary>Of <see cref="OffloadedBytes"/>, those that could not be page-locked (the system refused): their copies are slower.</summary>
    public long PageableHostBytes { get; private set; }

    /// <summary>Host-to-device copies made, and their bytes: more than the weights once the budget forces re-uploads.</summary>
    public long CopyCount { get; private set; }
    public long CopiedBytes { get; private set; }

    /// <summary>Whether copies overlap the kernels (CUDA) or run in order with them (the simulator).</summary>
    public bool CopiesOverlapCompute => copies is CopyStreamCopies;

    /// <summary>Takes a weight's device bytes into host memory; <paramref name="what"/> names it in errors.</summary>
    public OffloadedWeight Register(ReadOnlySpan<byte> bytes, string what)
    {
        if (bytes.Length > BudgetBytes)
            throw new ArgumentException(
                $"{what} takes {Format(bytes.Length)} on the device, more than the whole weight offload budget of {Format(BudgetBytes)}: " +
                $"raise --gpu-memory-budget above {Format(bytes.Length)} (or run without --offload)");
        var host = HostBuffer.Copy(accelerator, bytes, pinHost);
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            Weights++;
            HostBytes += bytes.Length;
            OffloadedWeights++;
            OffloadedBytes += bytes.Length;
            if (!host.Pinned) PageableHostBytes += bytes.Length;
        }
        return new OffloadedWeight(this, host, bytes.Length, what);
    }

    /// <summary>
    /// The weight's bytes on the device for an op about to read them: placed (copied) when not resident, ordered so
    /// kernels enqueued from now on see the copy complete. The next weights of the last pass are placed ahead.
    /// </summary>
    internal (ArrayView<byte> View, IntPtr Pointer) Acquire(OffloadedWeight weight)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            ObjectDisposedException.ThrowIf(weight.Released, weight);
            accelerator.Bind();
            if (!weight.IsResident && !TryPlace(weight))
                throw new InvalidOperationException(
                    $"the weight offload budget of {Format(BudgetBytes)} cannot hold {weight.What} ({Format(weight.Bytes)}) beside the " +
                    $"{ProtectedWeights} weights the current ops still read: raise --gpu-memory-budget");
            copies.BeforeUse(weight);
            Remember(weight);
            Prefetch(weight);
            return (arena.View.SubView(weight.Offset, weight.Bytes).AsContiguous(), arena.NativePtr + checked((nint)weight.Offset));
        }
    }

    /// <summary>Frees a weight's host bytes and its place in the arena (the tensor was disposed).</summary>
    internal void Release(OffloadedWeight weight)
    {
        lock (gate)
        {
            if (weight.Released)
                return;
            weight.Released = true;
            if (!disposed)
            {
                // A copy may still read the host bytes.
                copies.Drain();
                if (weight.IsResident)
                    Evict(weight);
                copies.Forget(weight);
                for (int i = 0; i < recent.Length; i++)
                    if (ReferenceEquals(recent[i], weight))
                        recent[i] = null;
            }
            weight.Next = null;
            Weights--;
            HostBytes -= weight.Bytes;
            weight.Host.Dispose();
        }
    }

    /// <summary>Learns the order of reads (for prefetch) and keeps the latest ones from eviction.</summary>
    private void Remember(OffloadedWeight weight)
    {
        var previous = recent[0];
        if (ReferenceEquals(previous, weight))
            return;
        if (previous is not null)
            previous.Next = weight;
        int found = Array.IndexOf(recent, weight);
        int shift = found < 0 ? recent.Length - 1 : found;
        Array.Copy(recent, 0, recent, 1, shift);
        recent[0] = weight;
    }

    private void Prefetch(OffloadedWeight weight)
    {
        long ahead = 0;
        var next = weight.Next;
        for (int step = 0; step < PrefetchAhead && next is not null && !ReferenceEquals(next, weight); step++, next = next.Next)
        {
            ahead += Aligned(next.Bytes);
            if (ahead > BudgetBytes / 2)
                return;
            // No room beside the protected weights: the demand path will say so if it matters.
            if (!next.IsResident && !TryPlace(next))
                return;
        }
    }

    /// <summary>Puts the weight at the first place from the cursor on (wrapping once) that overlaps no protected weight.</summary>
    private bool TryPlace(OffloadedWeight weight)
    {
        long capacity = BudgetBytes;
        for (int pass = 0; pass < 2; pass++)
        {
            long start = pass == 0 ? cursor : 0;
            while (start + weight.Bytes <= capacity)
            {
                long end = start + weight.Bytes;
                var blocker = recent.FirstOrDefault(p => p is { IsResident: true } && p.Offset < end && start < p.Offset + p.Bytes);
                if (blocker is not null)
                {
                    start = Aligned(blocker.Offset + blocker.Bytes);
                    continue;
                }
                foreach (var overlapped in resident.Where(r => r.Offset < end && start < r.Offset + r.Bytes).ToList())
                    Evict(overlapped);
                weight.Offset = start;
                resident.Add(weight);
                ResidentBytes += weight.Bytes;
                PeakResidentBytes = Math.Max(PeakResidentBytes, ResidentBytes);
                cursor = Math.Min(Aligned(end), capacity);
                copies.Copy(weight, arena.View.SubView(start, weight.Bytes));
                CopyCount++;
                CopiedBytes += weight.Bytes;
                return true;
            }
        }
        return false;
    }

    private void Evict(OffloadedWeight weight)
    {
        resident.Remove(weight);
        ResidentBytes -= weight.Bytes;
        weight.Offset = -1;
        weight.CopyPending = false;
    }

    private static long Aligned(long bytes) => (bytes + Alignment - 1) / Alignment * Alignment;

    internal static string Format(long bytes) => bytes >= 1L << 30
        ? $"{bytes / (double)(1L << 30):F2} GiB"
        : $"{bytes / (double)(1L << 20):F1} MiB";

    public void Dispose()
    {
        lock (gate)
        {
            if (disposed)
                return;
            disposed = true;
            copies.Dispose();
            arena.Dispose();
        }
    }

    /// <summary>How copies into the arena are ordered against the kernels that read it.</summary>
    private abstract class ArenaCopies : IDisposable
    {
        /// <summary>Enqueues the copy of a weight's host bytes into its place.</summary>
        public abstract void Copy(OffloadedWeight weight, ArrayView1D<byte, Stride1D.Dense> place);

        /// <summary>Makes kernels enqueued from now on wait for the weight's copy.</summary>
        public abstract void BeforeUse(OffloadedWeight weight);

        /// <summary>Waits until no copy reads host memory any more.</summary>
        public abstract void Drain();

        /// <summary>Frees what was kept for a released weight.</summary>
        public virtual void Forget(OffloadedWeight weight) { }

        public abstract void Dispose();
    }

    /// <summary>The simulator's (and the fallback's) ordering: copies queue on the compute stream, in order with kernels.</summary>
    private sealed class ComputeStreamCopies(Accelerator accelerator) : ArenaCopies
    {
        public override void Copy(OffloadedWeight weight, ArrayView1D<byte, Stride1D.Dense> place) =>
            weight.Host.CopyTo(place, accelerator.DefaultStream);

        public override void BeforeUse(OffloadedWeight weight) { }

        public override void Drain() => accelerator.DefaultStream.Synchronize();

        public override void Dispose() { }
    }

    /// <summary>CUDA: copies on their own stream, fenced by driver events (see the class summary).</summary>
    private sealed class CopyStreamCopies : ArenaCopies
    {
        private readonly CudaDriverNative driver = CudaDriverNative.Instance;
        private readonly CudaStream copyStream;
        private readonly IntPtr computeStream;
        private readonly IntPtr computeReached;

        public CopyStreamCopies(CudaAccelerator accelerator)
        {
            copyStream = (CudaStream)accelerator.CreateStream();
            computeStream = ((CudaStream)accelerator.DefaultStream).StreamPtr;
            computeReached = driver.CreateEvent();
        }

        public override void Copy(OffloadedWeight weight, ArrayView1D<byte, Stride1D.Dense> place)
        {
            // Kernels enqueued so far may read what this copy overwrites (the evicted weights): wait for them.
            driver.Record(computeReached, computeStream);
            driver.Wait(copyStream.StreamPtr, computeReached);
            weight.Host.CopyTo(place, copyStream);
            if (weight.CopyDone == IntPtr.Zero)
                weight.CopyDone = driver.CreateEvent();
            driver.Record(weight.CopyDone, copyStream.StreamPtr);
            weight.CopyPending = true;
        }

        public override void BeforeUse(OffloadedWeight weight)
        {
            if (!weight.CopyPending)
                return;
            driver.Wait(computeStream, weight.CopyDone);
            weight.CopyPending = false;
        }

        public override void Drain() => copyStream.Synchronize();

        public override void Forget(OffloadedWeight weight)
        {
            if (weight.CopyDone == IntPtr.Zero)
                return;
            driver.DestroyEvent(weight.CopyDone);
            weight.CopyDone = IntPtr.Zero;
        }

        public override void Dispose()
        {
            copyStream.Synchronize();
            driver.DestroyEvent(computeReached);
            copyStream.Dispose();
        }
    }
}

/// <summary>One offloaded weight: its host bytes and, while resident, its place in the arena.</summary>
internal sealed class OffloadedWeight
{
    private readonly WeightResidency owner;

    internal OffloadedWeight(WeightResidency owner, HostBuffer host, long bytes, string what)
    {
        this.owner = owner;
        Host = host;
        Bytes = bytes;
        What = what;
    }

    internal HostBuffer Host { get; }
    internal long Bytes { get; }
    internal string What { get; }

    /// <summary>Byte offset in the arena, or −1 when not resident.</summary>
    internal long Offset { get; set; } = -1;
    internal bool IsResident => Offset >= 0;

    /// <summary>The weight read after this one last time: the first to place ahead of need.</summary>
    internal OffloadedWeight? Next { get; set; }

    /// <summary>CUDA: the event recorded after this weight's last copy, and whether the compute stream still has to wait for it.</summary>
    internal IntPtr CopyDone { get; set; }
    internal bool CopyPending { get; set; }
    internal bool Released { get; set; }

    /// <summary>See <see cref="WeightResidency.Acquire"/>.</summary>
    internal (ArrayView<byte> View, IntPtr Pointer) Acquire() => owner.Acquire(this);

    internal void Release() => owner.Release(this);
}
