using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// <see cref="IBackend"/> on an ILGPU accelerator: CUDA in production (cuBLAS for Linear when a libcublas is found),
/// ILGPU's CPU accelerator as a simulator for tests. Every op is one or a few kernel launches on the accelerator's
/// default stream, so ops run in the order they are called; <see cref="Synchronize"/> waits for them.
/// Each public op binds the accelerator to the calling thread first (a no-op when it already is), because CUDA
/// launches and cuBLAS calls use the thread's current CUDA context.
/// </summary>
public sealed partial class IlgpuBackend : IBackend, IMemoryStatistics
{
    /// <summary>Simulated CPU device: warps of 8, at most 32 threads per group. Every simulated thread is an OS
    /// thread and a barrier costs a context switch per thread; 16-thread groups ran ~10× faster than 256-thread
    /// groups on 2 cores, so the simulator gets small groups.</summary>
    private static readonly CPUDevice SimulatorDevice = new(numThreadsPerWarp: 8, numWarpsPerMultiprocessor: 4, numMultiprocessors: 1);

    private static readonly Lazy<(bool Available, string Reason)> CudaProbe = new(ProbeCuda);

    private readonly Context context;
    private readonly Accelerator accelerator;
    private readonly GpuKernels kernels;
    private readonly GpuBufferPool<float> floatPool;
    private readonly GpuBufferPool<ushort> wordPool;
    private readonly CuBlasNative? cublas;
    private readonly LaunchShape launch;
    private readonly Dictionary<string, IDisposable> tables = new();
    private readonly object tablesGate = new();
    private bool disposed;

    private IlgpuBackend(Context context, Accelerator accelerator, GpuPrecision precision, Action<string> log)
    {
        this.context = context;
        this.accelerator = accelerator;
        Precision = precision;
        accelerator.Bind();
        kernels = new GpuKernels(accelerator);
        launch = accelerator.AcceleratorType == AcceleratorType.Cuda ? LaunchShape.Gpu : LaunchShape.Simulator;
        FusedKernels = new FusedKernelLauncher(this, launch.RowGroup);
        floatPool = new GpuBufferPool<float>(accelerator);
        wordPool = new GpuBufferPool<ushort>(accelerator);
        if (launch.LargestGroup > accelerator.MaxNumThreadsPerGroup)
            throw new InvalidOperationException(
                $"{accelerator.Name} allows {accelerator.MaxNumThreadsPerGroup} threads per group, the kernels need {launch.LargestGroup}");

        if (accelerator is CudaAccelerator cuda)
        {
            cublas = CuBlasNative.TryCreate(out string report);
            if (cublas is not null)
            {
                cublas.SetStream(((CudaStream)cuda.DefaultStream).StreamPtr);
                // BFloat16 precision already rounds GEMM inputs to bf16 (8 significant bits); TF32 (11) for the
                // float32 GEMMs (sgemm for f32/f16 weights) stays within that promise. Float32 keeps the handle's
                // default math: full float32, parity with the CPU backend.
                cublas.SetTf32(precision == GpuPrecision.BFloat16);
                GemmPath = $"cuBLAS {cublas.VersionText} sgemm/GemmEx ({cublas.LibraryName})";
                log($"[cuda] {report}; Linear and Attention run on cuBLAS, precision {precision}" +
                    (precision == GpuPrecision.BFloat16 ? " (TF32 for float32 GEMMs)" : ""));
            }
            else
            {
                GemmPath = "ILGPU tiled GEMM";
                log($"[cuda] {report}; Linear falls back to the ILGPU tiled GEMM kernel (slower)");
            }
            Name = "cuda";
            Description = $"{cuda.Name}, compute {cuda.Architecture.Major}.{cuda.Architecture.Minor}, " +
                $"{cuda.NumMultiprocessors} SMs, {cuda.MemorySize / (1024.0 * 1024 * 1024):F1} GiB, {GemmPath}, precision {precision}";
        }
        else
        {
            GemmPath = "ILGPU tiled GEMM";
            Name = "ilgpu-cpu";
            Description = $"ILGPU CPU accelerator (GPU simulator, {accelerator.MaxNumThreadsPerGroup} threads per group), {GemmPath}, precision {precision}";
        }
    }

    public string Name { get; }
    public string Description { get; private set; }

    /// <summary>How Linear multiplies by bf16 weights on cuBLAS (see <see cref="GpuPrecision"/>).</summary>
    public GpuPrecision Precision { get; }

    /// <summary>"cuBLAS … sgemm/GemmEx (libcublas.so.N)" or "ILGPU tiled GEMM".</summary>
    public string GemmPath { get; }

    /// <summary>True when Linear runs on cuBLAS.</summary>
    public bool UsesCuBlas => cublas is not null;

    /// <summary>
    /// Most bytes of float32 score scratch ([heads, query rows, key rows]) one cuBLAS attention pass may take; the
    /// query rows are split into chunks that fit. 2 GiB holds FLUX's 24 heads at 4608 tokens (1.9 GiB) in one pass.
    /// Tests set it tiny to exercise chunking.
    /// </summary>
    internal long AttentionScratchBudgetBytes { get; set; } = 2L << 30;

    /// <summary>Whether Attention may take the cuBLAS path (tests turn it off to check the ILGPU kernel on CUDA).</summary>
    internal bool AttentionOnCuBlasEnabled { get; set; } = true;

    /// <summary>The last Attention call's path: "flash", "ilgpu" or "cublas" with its chunk count, e.g. "cublas×3".</summary>
    internal string LastAttentionPath { get; private set; } = "";

    internal Accelerator Accelerator => accelerator;

    /// <summary>Launches the kernels generated models fuse from their schemas.</summary>
    public FusedKernelLauncher FusedKernels { get; }

    // ---------------------------------------------------------------- construction

    /// <summary>The CUDA device a rank takes: its local rank, wrapping round when the machine has fewer GPUs than ranks.</summary>
    public static int DeviceForRank(int localRank)
    {
        int count = CudaProbe.Value.Available ? CudaDevice.GetDevices(_ => true).Length : 0;
        return count == 0 ? 0 : localRank % count;
    }

    /// <summary>
    /// The backend on CUDA device <paramref name="deviceIndex"/>. Logs (to <paramref name="log"/>, default stderr)
    /// which cuBLAS library was loaded, or why Linear falls back to the ILGPU GEMM kernel.
    /// </summary>
    /// <exception cref="InvalidOperationException">No CUDA device (or no driver) is found.</exception>
    public static IlgpuBackend CreateCuda(int deviceIndex = 0, GpuPrecision precision = GpuPrecision.Float32,
        Action<string>? log = null)
    {
        var (available, reason) = CudaProbe.Value;
        if (!available)
            throw new InvalidOperationException($"no CUDA device found: {reason}");
        var context = Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O1));
        try
        {
            int count = context.GetCudaDevices().Count;
            if (deviceIndex < 0 || deviceIndex >= count)
                throw new InvalidOperationException(
                    $"no CUDA device found at index {deviceIndex}: {count} device(s) visible");
            var accelerator = context.CreateCudaAccelerator(deviceIndex);
            return new IlgpuBackend(context, accelerator, precision, log ?? (line => Console.Error.WriteLine(line)));
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The backend on ILGPU's CPU accelerator: real kernels, simulated threads. For tests at tiny sizes.</summary>
    /// <remarks>
    /// <see cref="GpuPrecision.BFloat16"/> stores activations in bf16 as on CUDA; with no cuBLAS here, Linear and
    /// Attention run the ILGPU kernels on them (so tests check the bf16 paths of every kernel).
    /// </remarks>
    public static IlgpuBackend CreateCpuSimulator(GpuPrecision precision = GpuPrecision.Float32) => CreateCpuSimulator(SimulatorDevice, precision);

    /// <summary>The simulator on another simulated device: the flash kernels need warps of 32 threads.</summary>
    internal static IlgpuBackend CreateCpuSimulator(CPUDevice device, GpuPrecision precision = GpuPrecision.Float32)
    {
        var context = Context.Create(builder =>
            builder.CPU(device).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        try
        {
            return new IlgpuBackend(context, context.CreateCPUAccelerator(0), precision, _ => { });
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether a CUDA device can be used. Never throws; the first call costs a driver load (when one exists) and a
    /// device count, later calls are free.
    /// </summary>
    public static bool IsCudaAvailable() => CudaProbe.Value.Available;

    /// <summary>Why <see cref="IsCudaAvailable"/> answered as it did.</summary>
    public static string CudaAvailability => CudaProbe.Value.Reason;

    private static (bool, string) ProbeCuda()
    {
        try
        {
            // Checking for the driver library first keeps ILGPU's CUDA bindings from being touched at all on a
            // machine without one.
            string driver = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
            if (!NativeLibrary.TryLoad(driver, out IntPtr handle))
                return (false, $"the CUDA driver ({driver}) is not installed");
            NativeLibrary.Free(handle);
            int count = CudaDevice.GetDevices(_ => true).Length;
            return count > 0
                ? (true, $"{count} CUDA device(s)")
                : (false, "the CUDA driver reports no usable device (or no architecture ILGPU 1.5.3 supports)");
        }
        catch (Exception e)
        {
            return (false, $"probing CUDA failed: {e.GetType().Name}: {e.Message}");
        }
    }

    // ---------------------------------------------------------------- memory

    public DeviceTensor Allocate(int[] shape)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        long length = HostTensor.ElementCount(shape);
        return new GpuTensor(this, (int[])shape.Clone(), floatPool.Rent(length), pooled: true);
    }

    /// <summary>
    /// In <see cref="GpuPrecision.BFloat16"/>, bf16 words from the word pool (half the bytes every op moves);
    /// otherwise float32, exactly <see cref="Allocate"/>.
    /// </summary>
    public DeviceTensor AllocateActivation(int[] shape)
    {
        if (Precision != GpuPrecision.BFloat16)
            return Allocate(shape);
        ThrowIfDisposed();
        accelerator.Bind();
        long length = HostTensor.ElementCount(shape);
        return new GpuTensor(this, (int[])shape.Clone(), DType.BF16, wordPool.Rent(length), pooled: true);
    }

    public DeviceTensor Upload(HostTensor host)
    {
        var tensor = (GpuTensor)Allocate(host.Shape);
        tensor.Floats.CopyFromCPU(new ReadOnlySpan<float>(host.Data));
        return tensor;
    }

    public DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        long length = HostTensor.ElementCount(shape);
        if (raw.Length != length * dtype.SizeInBytes())
            throw new ArgumentException(
                $"a {dtype} tensor of shape {HostTensor.FormatShape(shape)} needs {length * dtype.SizeInBytes()} bytes, got {raw.Length}");
        shape = (int[])shape.Clone();
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("weights are little-endian and so must the host be");

        // Matrices keep 16-bit storage (that is what lets the bf16 model fit); vectors (biases, norm scales) are
        // tiny and widened so the element-wise kernels need only one element type.
        if (GpuMemoryPolicy.WeightStorage(shape, dtype) != DType.F32)
        {
            if (Offloads(shape))
                return UploadOffloaded(shape, dtype, raw);
            var words = accelerator.Allocate1D<ushort>(Math.Max(length, 1));
            if (length > 0)
                words.View.SubView(0, length).AsContiguous().CopyFromCPU(MemoryMarshal.Cast<byte, ushort>(raw));
            return new GpuTensor(this, shape, dtype, words);
        }

        float[] floats = dtype switch
        {
            DType.F32 => MemoryMarshal.Cast<byte, float>(raw).ToArray(),
            DType.BF16 => Array.ConvertAll(MemoryMarshal.Cast<byte, ushort>(raw).ToArray(), w => BitConverter.UInt32BitsToSingle((uint)w << 16)),
            DType.F16 => Array.ConvertAll(MemoryMarshal.Cast<byte, System.Half>(raw).ToArray(), h => (float)h),
            DType.F64 => Array.ConvertAll(MemoryMarshal.Cast<byte, double>(raw).ToArray(), d => (float)d),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
        };
        if (Offloads(shape))
            return UploadOffloaded(shape, DType.F32, MemoryMarshal.AsBytes(floats.AsSpan()));
        // Weights live as long as the model: an exact allocation, not a pool bucket with up to 12.5 % slack.
        var buffer = accelerator.Allocate1D<float>(Math.Max(length, 1));
        if (length > 0)
            buffer.View.SubView(0, length).AsContiguous().CopyFromCPU(new ReadOnlySpan<float>(floats));
        return new GpuTensor(this, shape, buffer, pooled: false);
    }

    public HostTensor Download(View view, int[] shape)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        long count = HostTensor.ElementCount(shape);
        if (count != view.ElementCount)
            throw new ArgumentException($"{view} has {view.ElementCount} elements, shape {HostTensor.FormatShape(shape)} {count}");
        var tensor = ActivationTensor(view, nameof(view));
        CheckBounds(view, tensor, nameof(view));
        var data = new float[count];
        if (count == 0)
            return new HostTensor((int[])shape.Clone(), data);
        // A bf16 activation is widened on the device by the copy below (exact), the strided case's one extra pass.
        if (view.IsContiguous && tensor.DType == DType.F32)
        {
            tensor.Floats.SubView(view.Offset, count).CopyToCPU(new Span<float>(data));
        }
        else
        {
            using var dense = (GpuTensor)Allocate([view.Batch, view.Rows, view.Cols]);
            Copy(dense.AsView(), view);
            dense.Floats.CopyToCPU(new Span<float>(data));
        }
        return new HostTensor((int[])shape.Clone(), data);
    }

    public void Synchronize()
    {
        ThrowIfDisposed();
        accelerator.Bind();
        accelerator.Synchronize();
    }

    /// <summary>Frees pooled buffers no tensor uses (after a forward pass of another size, say), and the kept host bytes of moved activations.</summary>
    public long ReleaseCachedMemory()
    {
        FreeHostBuffers();
        return floatPool.Trim() + wordPool.Trim();
    }

    internal void ReturnToPool(MemoryBuffer1D<float, Stride1D.Dense> buffer)
    {
        if (disposed)
            buffer.Dispose();
        else
            floatPool.Return(buffer);
    }

    internal GpuTensor Widen(GpuTensor narrow)
    {
        accelerator.Bind();
        var wide = new GpuTensor(this, narrow.Shape, floatPool.Rent(narrow.Length), pooled: true);
        if (narrow.Length > 0)
            WidenWords(wide.Floats, narrow.Words, narrow.DType);
        return wide;
    }

    private void WidenWords(ArrayView<float> wide, ArrayView<ushort> narrow, DType dtype)
    {
        var kernel = dtype == DType.BF16 ? kernels.WidenBFloat16 : kernels.WidenFloat16;
        kernel((int)CheckedCount(narrow.Length), wide, narrow);
    }

    // ---------------------------------------------------------------- element-wise ops

    public void Copy(View y, View x) => Elementwise(kernels.Copy, y, x);

    public void Silu(View y, View x) => Elementwise(kernels.Silu, y, x);

    public void GeluTanh(View y, View x) => Elementwise(kernels.GeluTanh, y, x);

    public void ScaleShift(View y, View x, float scale, float shift)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Operand(x, y, nameof(x));
        kernels.ScaleShift(count, y.Cols, scale, shift, ys, yd, xs, xd);
    }

    public void Transpose(View y, View x)
    {
        if (y.Batch != x.Batch || y.Rows != x.Cols || y.Cols != x.Rows)
            throw new ArgumentException($"cannot transpose {x} into {y}: each sample needs [rows, cols] → [cols, rows]");
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var xTensor = ActivationTensor(x, nameof(x));
        CheckBounds(x, xTensor, nameof(x));
        var xs = new StridedMatrix(x.Offset, x.Rows, x.BatchStride, x.RowStride);
        kernels.Transpose(count, x.Rows, x.Cols, ys, yd, xs, ElementsOf(xTensor));
    }

    public void Add(View y, View a, View b)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (aLayout, aData) = Operand(a, y, nameof(a));
        var (bLayout, bData) = Operand(b, y, nameof(b));
        kernels.Add(count, y.Cols, ys, yd, aLayout, aData, bLayout, bData);
    }

    public void Modulate(View y, View x, View shift, View scale)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Operand(x, y, nameof(x));
        var (shiftLayout, shiftData) = Operand(shift, y, nameof(shift));
        var (scaleLayout, scaleData) = Operand(scale, y, nameof(scale));
        kernels.Modulate(count, y.Cols, ys, yd, xs, xd, shiftLayout, shiftData, scaleLayout, scaleData);
    }

    public void GatedResidual(View y, View residual, View x, View gate)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (rs, rd) = Operand(residual, y, nameof(residual));
        var (xs, xd) = Operand(x, y, nameof(x));
        var (gs, gd) = Operand(gate, y, nameof(gate));
        kernels.GatedResidual(count, y.Cols, ys, yd, rs, rd, xs, xd, gs, gd);
    }

    private void Elementwise(Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements> kernel,
        View y, View x)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Operand(x, y, nameof(x));
        kernel(count, y.Cols, ys, yd, xs, xd);
    }

    // ---------------------------------------------------------------- row reductions

    public void LayerNorm(View y, View x, float eps)
    {
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        int rows = y.Batch * y.Rows;
        int group = GroupSizeFor(y.Cols, launch.RowGroup);
        kernels.LayerNorm(new KernelConfig(rows, group), y.Cols, eps, ys, yd, xs, xd);
    }

    public void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps)
    {
        var (count, ys, yd) = Output(y);
        if (groupSize <= 0 || y.Cols % groupSize != 0)
            throw new ArgumentException($"RmsNorm group size {groupSize} does not divide {y.Cols} columns", nameof(groupSize));
        var scaleTensor = OwnTensor(scale, nameof(scale)).AsFloat32();
        if (scaleTensor.Length != groupSize)
            throw new ArgumentException($"RmsNorm scale has {scaleTensor.Length} elements, group size is {groupSize}", nameof(scale));
        if (count == 0) return;
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        int groupsPerRow = y.Cols / groupSize;
        int groups = checked(y.Batch * y.Rows * groupsPerRow);
        int group = GroupSizeFor(groupSize, launch.RowGroup);
        kernels.RmsNorm(new KernelConfig(groups, group), groupSize, groupsPerRow, eps, ys, yd, xs, xd, scaleTensor.Floats);
    }

    /// <summary>The smallest power of two ≥ work, between one warp-ish 8 and the launch shape's maximum.</summary>
    private static int GroupSizeFor(int work, int maximum)
    {
        int size = 8;
        while (size < work && size < maximum)
            size *= 2;
        return size;
    }

    // ---------------------------------------------------------------- embeddings

    public void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod)
    {
        if (y.Cols % 2 != 0)
            throw new ArgumentException($"a timestep embedding has an even width, got {y.Cols}", nameof(y));
        if (t.Cols != 1)
            throw new ArgumentException($"timesteps are one per row (Cols = 1), got {t.Cols} columns", nameof(t));
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (ts, td) = RowOperand(t, y, nameof(t));
        int half = y.Cols / 2;
        // Same float32 frequencies as the CPU backend and the reference.
        var frequencies = Table($"timestep:{half}:{maxPeriod:R}", () => ReferenceMath.TimestepFrequencies(half, maxPeriod));
        kernels.Timestep(count, half, timeFactor, ys, yd, ts, td, frequencies);
    }

    public void RopeEmbed(View pe, View ids, int[] axesDim, float theta)
    {
        if (ids.Cols != axesDim.Length)
            throw new ArgumentException($"ids have {ids.Cols} columns for {axesDim.Length} axes", nameof(ids));
        int angles = 0;
        foreach (int d in axesDim)
        {
            if (d <= 0 || d % 2 != 0)
                throw new ArgumentException($"RoPE axis widths must be positive and even, got [{string.Join(", ", axesDim)}]", nameof(axesDim));
            angles += d / 2;
        }
        if (pe.Cols != 4 * angles)
            throw new ArgumentException($"pe needs 4·{angles} = {4 * angles} columns, has {pe.Cols}", nameof(pe));
        if (ids.Batch != pe.Batch || ids.Rows != pe.Rows)
            throw new ArgumentException($"ids {ids} and pe {pe} disagree on batch or rows");
        var (_, ps, pd) = Output(pe);
        if (pe.ElementCount == 0) return;
        var idsTensor = ActivationTensor(ids, nameof(ids));
        CheckBounds(ids, idsTensor, nameof(ids));
        var idsLayout = new StridedMatrix(ids.Offset, pe.Rows, ids.BatchStride, ids.RowStride);

        string key = $"rope:{theta:R}:{string.Join(",", axesDim)}";
        var omega = Table(key + ":omega", () =>
        {
            var w = new double[angles];
            int p = 0;
            foreach (int d in axesDim)
                for (int j = 0; j < d / 2; j++)
                    w[p++] = 1.0 / Math.Pow(theta, 2.0 * j / d);
            return w;
        });
        var axisOfAngle = Table(key + ":axis", () =>
        {
            var a = new int[angles];
            int p = 0;
            for (int axis = 0; axis < axesDim.Length; axis++)
                for (int j = 0; j < axesDim[axis] / 2; j++)
                    a[p++] = axis;
            return a;
        });
        int count = (int)CheckedCount((long)pe.Batch * pe.Rows * angles);
        kernels.Rope(count, angles, ps, pd, idsLayout, ElementsOf(idsTensor), omega, axisOfAngle);
    }

    public void ApplyRope(View y, View x, View pe, int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0 || x.Cols % headDim != 0)
            throw new ArgumentException($"head dim {headDim} must be even and divide {x.Cols} columns", nameof(headDim));
        if (pe.Cols != headDim / 2 * 4)
            throw new ArgumentException($"pe needs {headDim / 2 * 4} columns for head dim {headDim}, has {pe.Cols}", nameof(pe));
        var (_, ys, yd) = Output(y);
        if (y.ElementCount == 0) return;
        var (xs, xd) = SameShapeOperand(x, y, nameof(x));
        if (pe.Rows != y.Rows || (pe.Batch != y.Batch && pe.Batch != 1))
            throw new ArgumentException($"pe {pe} needs one row per token of {y}", nameof(pe));
        var peTensor = ActivationTensor(pe, nameof(pe));
        CheckBounds(pe, peTensor, nameof(pe));
        var peLayout = new StridedMatrix(pe.Offset, y.Rows, pe.Batch == y.Batch ? pe.BatchStride : 0, pe.RowStride);
        int pairsPerRow = y.Cols / 2;
        int count = (int)CheckedCount(y.ElementCount / 2);
        kernels.ApplyRope(count, pairsPerRow, headDim / 2, ys, yd, xs, xd, peLayout, ElementsOf(peTensor));
    }

    // ---------------------------------------------------------------- attention

    public void Attention(View o, View q, View k, View v, int heads, float scale) =>
        AttentionCore(o, q, k, v, heads, scale, null, false);

    /// <summary>Both attentions: the unmasked one passes no bias and no causal mask (see <see cref="MaskedAttention"/>).</summary>
    private void AttentionCore(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal)
    {
        if (heads <= 0 || q.Cols % heads != 0)
            throw new ArgumentException($"{heads} heads do not divide {q.Cols} columns", nameof(heads));
        int headDim = q.Cols / heads;
        if (k.Cols != q.Cols || v.Cols != q.Cols || o.Cols != q.Cols)
            throw new ArgumentException($"q, k, v and o need the same columns: {q.Cols}, {k.Cols}, {v.Cols}, {o.Cols}");
        if (o.Batch != q.Batch || o.Rows != q.Rows)
            throw new ArgumentException($"o {o} needs q's batch and rows {q}", nameof(o));
        if (k.Batch != q.Batch || v.Batch != q.Batch || k.Rows != v.Rows)
            throw new ArgumentException($"k {k} and v {v} need q's batch and equal rows");
        if (k.Rows == 0)
            throw new ArgumentException("attention over zero keys is undefined", nameof(k));
        var (count, os, od) = Output(o);
        if (count == 0) return;
        var (qs, qd) = Strided(q, nameof(q));
        var (ks, kd) = Strided(k, nameof(k));
        var (vs, vd) = Strided(v, nameof(v));
        var (bs, bd) = bias is View b ? Strided(b, "bias") : (default, default);
        var mask = new ScoreMask(bs, bd, bias is null ? 0 : 1, causal ? 1 : 0);
        if (UsesFlashAttention(headDim))
        {
            FlashAttentionForward(new AttentionTensor(os, od), q, k, v, heads, headDim, scale, mask, default);
            LastAttentionPath = "flash";
            return;
        }
        if (cublas is not null && AttentionOnCuBlasEnabled && attentionKernel != AttentionKernelChoice.Tiled &&
            CuBlasCanAddress(o) && CuBlasCanAddress(q) &&
            CuBlasCanAddress(k) && CuBlasCanAddress(v) && OneStorageType(o, q, k, v))
        {
            AttentionOnCuBlas(o, q, k, v, heads, headDim, scale, bias, causal);
            return;
        }
        // The tiled kernel keeps a query row's head in registers: the VAE's single 512-wide head needs cuBLAS.
        if (headDim > AttentionKernels.MaxHeadDim)
            throw new ArgumentException(
                $"head dim {headDim} exceeds the attention kernel's {AttentionKernels.MaxHeadDim}; wider heads run through cuBLAS, which is {(cublas is null ? "not loaded" : "unable to address these views (each needs a row stride ≥ its width, and q, k, v, o one storage type)")}",
                nameof(heads));
        LastAttentionPath = "ilgpu";
        var grid = new Index3D((q.Rows + AttentionKernels.QueryTile - 1) / AttentionKernels.QueryTile, heads, q.Batch);
        kernels.Attention(new KernelConfig(grid, new Index3D(launch.AttentionGroup, 1, 1)),
            q.Rows, k.Rows, headDim, scale, os, od, qs, qd, ks, kd, vs, vd, mask);
    }

    /// <summary>A view cuBLAS can take as a column-major matrix per batch: leading dimension ≥ its columns, in int.</summary>
    private static bool CuBlasCanAddress(View view) => view.RowStride >= view.Cols && view.RowStride <= int.MaxValue;

    /// <summary>Whether the attention operands share a storage type, as the cuBLAS products need (float32 or bf16).</summary>
    private static bool OneStorageType(View o, View q, View k, View v) =>
        o.Tensor.DType == q.Tensor.DType && k.Tensor.DType == q.Tensor.DType && v.Tensor.DType == q.Tensor.DType;

    /// <summary>
    /// Attention as two strided-batched GEMMs around a row softmax, per batch and chunk of query rows:
    /// S_h = scale·Q_h·K_hᵀ for all heads in one call, softmax over each row of S in place, O_h = P_h·V_h in one call
    /// written straight into o's column blocks. Head h of a [rows, heads·Dh] view is the column block starting h·Dh
    /// elements in, with the view's row stride as leading dimension, so the batch stride between heads is Dh.
    ///
    /// cuBLAS is column-major: a row-major [R, C] matrix with row stride ld is its column-major [C, R] transpose.
    /// S = Q·Kᵀ is computed as Sᵀ (column-major Lk × n, ld Lk) = K·Qᵀ: gemm(T, N, m = Lk, n, k = Dh, A = K (column-major
    /// Dh × Lk), B = Q (column-major Dh × n)). That leaves S row-major [n, Lk] per head, one query's scores per row,
    /// which is what the softmax reads. O = P·V as Oᵀ (column-major Dh × n, ld = o's row stride) = Vᵀ·Pᵀ:
    /// gemm(N, N, m = Dh, n, k = Lk, A = V (column-major Dh × Lk), B = P (column-major Lk × n, ld Lk)).
    ///
    /// Precision: <see cref="GpuPrecision.Float32"/> runs cublasSgemmStridedBatched with the handle's default math
    /// (no TF32), parity with the CPU backend. <see cref="GpuPrecision.BFloat16"/> on float32 views runs
    /// cublasGemmStridedBatchedEx on the same float32 buffers with CUBLAS_COMPUTE_32F_FAST_TF32: tensor cores with
    /// inputs rounded to TF32 (11 significant bits, more than bf16's 8), float32 accumulation. On bf16 views (the
    /// activations of a bf16 forward) both products are bf16 × bf16 with float32 accumulation: the scores are written
    /// float32, masked and soft-maxed in float32, and the softmax writes the probabilities as bf16 into a second
    /// scratch for P·V, whose result lands in o as bf16. The softmax statistics are float32 in every case.
    ///
    /// Memory: the score scratch is heads·n·Lk floats from the pool, n chosen so it fits
    /// <see cref="AttentionScratchBudgetBytes"/>. At FLUX's size (24 heads, Lq = Lk = 4608) that is 1.9 GiB, one chunk;
    /// each call then moves about 8 GB through it (GEMM write, softmax read ×2 and write, GEMM read) against
    /// 2·2·24·4608²·128 = 261 GFLOP.
    ///
    /// Measured on an H200 (cuBLAS 13.1, B = 1, 24 heads, Dh 128, q/k/v column slices of a fused qkv), per call:
    /// L = 4608: Float32 7.8 ms, BFloat16/TF32 2.9 ms (of which the softmax pass 1.7 ms), the ILGPU kernel 102 ms;
    /// L = 1100: 0.53 / 0.24 / 6.8 ms; L = 300: 0.063 / 0.038 / 0.62 ms. cuBLAS wins at every size measured, so
    /// there is no small-size threshold: the kernel only serves where cuBLAS is missing or a view has a row stride
    /// below its width (broadcast rows). At 4608 the TF32 output differs from Float32's by at most 3.2e-4 (outputs
    /// up to 0.59), the kernel's by 2.4e-6.
    /// </summary>
    private void AttentionOnCuBlas(View o, View q, View k, View v, int heads, int headDim, float scale, View? bias, bool causal)
    {
        var (biasLayout, biasData) = bias is View biasView ? Strided(biasView, "bias") : (default, default);
        int keyRows = k.Rows;
        bool bf16 = q.Tensor.DType == DType.BF16;
        int chunk = GpuMemoryPolicy.AttentionChunkRows(AttentionScratchBudgetBytes, heads, keyRows, q.Rows, bf16);
        var scores = floatPool.Rent((long)heads * chunk * keyRows);
        var narrowProbabilities = bf16 ? wordPool.Rent((long)heads * chunk * keyRows) : null;
        var product = bf16 ? AttentionProduct.BFloat16 : Precision == GpuPrecision.BFloat16 ? AttentionProduct.Tf32 : AttentionProduct.Float32;
        int group = GroupSizeFor(keyRows, Math.Min(launch.RowGroup, AttentionKernels.SoftmaxMaxGroup));
        int chunks = 0;
        try
        {
            for (int b = 0; b < q.Batch; b++)
            {
                IntPtr kPointer = ElementPointer(k, b, 0), vPointer = ElementPointer(v, b, 0);
                for (int firstRow = 0; firstRow < q.Rows; firstRow += chunk)
                {
                    int n = Math.Min(chunk, q.Rows - firstRow);
                    long scoreStride = (long)n * keyRows;
                    StridedBatchedGemm(product, CuBlasNative.OperationTranspose, CuBlasNative.OperationNone,
                        keyRows, n, headDim, scale,
                        kPointer, (int)k.RowStride, headDim,
                        ElementPointer(q, b, firstRow), (int)q.RowStride, headDim,
                        scores.NativePtr, CuBlasNative.DataFloat32, keyRows, scoreStride, heads);
                    if (bias is not null || causal)
                        TextOps.MaskScores((int)CheckedCount(heads * scoreStride), keyRows, n, firstRow,
                            scores.View.SubView(0, heads * scoreStride).AsContiguous(), biasLayout, biasData,
                            bias is null ? 0 : 1, causal ? 1 : 0, q.Rows);
                    var scoreRows = scores.View.SubView(0, heads * scoreStride).AsContiguous();
                    kernels.SoftmaxRows(new KernelConfig(heads * n, group), keyRows, scoreRows,
                        narrowProbabilities is null ? scoreRows : Elements.BFloat16(narrowProbabilities.View.SubView(0, heads * scoreStride).AsContiguous()));
                    StridedBatchedGemm(product, CuBlasNative.OperationNone, CuBlasNative.OperationNone,
                        headDim, n, keyRows, 1f,
                        vPointer, (int)v.RowStride, headDim,
                        narrowProbabilities?.NativePtr ?? scores.NativePtr, keyRows, scoreStride,
                        ElementPointer(o, b, firstRow), bf16 ? CuBlasNative.DataBFloat16 : CuBlasNative.DataFloat32, (int)o.RowStride, headDim, heads);
                    chunks++;
                }
            }
        }
        finally
        {
            // Safe to reuse at once: later work on the same stream runs after these GEMMs.
            floatPool.Return(scores);
            if (narrowProbabilities is not null) wordPool.Return(narrowProbabilities);
        }
        LastAttentionPath = $"cublas×{chunks}";
    }

    /// <summary>How attention's two products multiply: sgemm, TF32 tensor cores on float32, or bf16 tensor cores.</summary>
    private enum AttentionProduct { Float32, Tf32, BFloat16 }

    /// <summary>
    /// One strided-batched product of attention: A and B in the product's storage (bf16 words for
    /// <see cref="AttentionProduct.BFloat16"/>, else float32), C in <paramref name="cType"/>; float32 accumulation.
    /// </summary>
    private void StridedBatchedGemm(AttentionProduct product, int transA, int transB, int m, int n, int k, float alpha,
        IntPtr a, int lda, long strideA, IntPtr b, int ldb, long strideB, IntPtr c, int cType, int ldc, long strideC, int batchCount)
    {
        if (product == AttentionProduct.Float32)
            cublas!.SgemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB,
                0f, c, ldc, strideC, batchCount);
        else
        {
            int inputType = product == AttentionProduct.BFloat16 ? CuBlasNative.DataBFloat16 : CuBlasNative.DataFloat32;
            int compute = product == AttentionProduct.BFloat16 ? CuBlasNative.ComputeFloat32 : CuBlasNative.ComputeFloat32FastTf32;
            cublas!.GemmStridedBatchedEx(transA, transB, m, n, k, alpha,
                a, inputType, lda, strideA, b, inputType, ldb, strideB,
                0f, c, cType, ldc, strideC, batchCount, compute);
        }
    }

    /// <summary>Device address of element (batch, row, 0) of a view, float32 or bf16 (bounds already checked).</summary>
    private static IntPtr ElementPointer(View view, int batch, int row) =>
        ((GpuTensor)view.Tensor).DevicePointer(view.Offset + batch * view.BatchStride + row * view.RowStride);

    /// <summary>
    /// In place softmax over each row of a dense [rows, cols] view: the kernel the cuBLAS attention path runs, exposed
    /// so tests can check it on the simulator.
    /// </summary>
    internal void SoftmaxRowsInPlace(View x)
    {
        if (!x.IsContiguous)
            throw new ArgumentException($"softmax rows need a dense view, got {x}", nameof(x));
        var (count, _, _) = Output(x);
        if (count == 0) return;
        int rows = checked(x.Batch * x.Rows);
        int group = GroupSizeFor(x.Cols, Math.Min(launch.RowGroup, AttentionKernels.SoftmaxMaxGroup));
        var scores = FloatTensor(x, nameof(x)).Floats.SubView(x.Offset, x.ElementCount);
        kernels.SoftmaxRows(new KernelConfig(rows, group), x.Cols, scores, scores);
    }

    // ---------------------------------------------------------------- linear

    public void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias)
    {
        if (weight is GpuTensor { IsQuantized: true } quantized)
        {
            LinearWithQuantizedWeight(y, x, quantized, bias);
            return;
        }
        var w = OwnTensor(weight, nameof(weight));
        int n = y.Cols, kDim = x.Cols;
        if (w.Length != (long)n * kDim || w.Shape.Length < 2 || w.Shape[^1] != kDim)
            throw new ArgumentException($"weight {w} is not [{n}, {kDim}] for x {x} → y {y}", nameof(weight));
        if (y.Batch != x.Batch || y.Rows != x.Rows)
            throw new ArgumentException($"y {y} and x {x} need the same batch and rows");
        GpuTensor? b = bias is null ? null : OwnTensor(bias, nameof(bias)).AsFloat32();
        if (b is not null && b.Length != n)
            throw new ArgumentException($"bias {b} does not have {n} elements", nameof(bias));
        var (count, ys, yd) = Output(y);
        if (count == 0) return;
        var (xs, xd) = Strided(x, nameof(x));
        int m = checked(x.Batch * x.Rows);

        if (kDim == 0)
        {
            // An empty sum: y is the bias (or zero). Neither GEMM path accepts K = 0.
            using var zeros = (GpuTensor)Allocate([n]);
            zeros.Floats.MemSetToZero();
            Copy(y, new View(zeros, 0, 1, 1, n, 0, 0));
            if (b is not null)
                kernels.AddBiasToRows(count, n, ys, yd, b.Floats);
            return;
        }

        if (cublas is not null)
        {
            LinearOnCuBlas(y, x, w, b);
            return;
        }

        int side = launch.GemmThreadsPerSide;
        var grid = new Index2D((n + 4 * side - 1) / (4 * side), (m + 4 * side - 1) / (4 * side));
        var config = new KernelConfig(grid, new Index2D(side, side));
        var biasData = b?.Floats ?? default;
        int hasBias = b is null ? 0 : 1;
        switch (w.DType)
        {
            case DType.F32:
                kernels.LinearFloat32(config, m, n, kDim, ys, yd, xs, xd, w.Floats, biasData, hasBias);
                break;
            case DType.BF16:
                kernels.LinearBFloat16(config, m, n, kDim, ys, yd, xs, xd, w.Words, biasData, hasBias);
                break;
            case DType.F16:
                kernels.LinearFloat16(config, m, n, kDim, ys, yd, xs, xd, w.Words, biasData, hasBias);
                break;
            default:
                throw new NotSupportedException($"weights stored as {w.DType}");
        }
    }

    /// <summary>
    /// y[M, N] = x[M, K]·W[N, K]ᵀ on cuBLAS. cuBLAS is column-major: a row-major [M, N] matrix with row stride ld
    /// is its column-major [N, M] transpose with leading dimension ld. So the call computes yᵀ = W·xᵀ:
    /// gemm(OP_T, OP_N, N, M, K, W (column-major [K, N], ld K), xᵀ (column-major [K, M], ld = x's row stride),
    /// yᵀ (ld = y's row stride)).
    ///
    /// bf16 weights in <see cref="GpuPrecision.Float32"/> are widened into a float32 scratch copy for each call and
    /// multiplied by sgemm, rather than run through an ILGPU kernel that widens on load: widening reads 2·N·K and
    /// writes 4·N·K bytes (≈ 0.1 ms for FLUX's largest 21504×3072 weight at 3 TB/s) against a GEMM of 2·M·N·K flops
    /// (≈ 8 ms for M = 4608 at sgemm's ~50 TFLOP/s), while a hand-written ILGPU SIMT GEMM without tensor cores
    /// reaches a fraction of sgemm's rate. Arithmetic from datasheet figures, not yet measured on the GPU.
    /// </summary>
    private void LinearOnCuBlas(View y, View x, GpuTensor w, GpuTensor? bias)
    {
        int n = y.Cols, kDim = x.Cols;
        bool stacked = x.BatchesStackAsRows && y.BatchesStackAsRows;
        if (!stacked && x.Batch > 1)
        {
            for (int batch = 0; batch < x.Batch; batch++)
                LinearOnCuBlas(Batch(y, batch), Batch(x, batch), w, bias);
            return;
        }
        int m = checked(x.Batch * x.Rows);
        if (y.RowStride < n || y.RowStride > int.MaxValue)
            throw new ArgumentException($"Linear output rows overlap or are too far apart for cuBLAS: {y}", nameof(y));
        var yTensor = (GpuTensor)y.Tensor;
        if (w.DType == DType.BF16 && Precision == GpuPrecision.BFloat16)
        {
            // bf16 × bf16 on tensor cores, float32 accumulation, the result stored in y's own dtype: a bf16 activation
            // is read and written in place, with no conversion pass; a float32 x (an uploaded input, a broadcast row)
            // is rounded into a dense bf16 copy first.
            var (xPointer, ldx, xScratch) = ProductOperand(x, DType.BF16);
            using (xScratch)
                cublas!.GemmEx(CuBlasNative.OperationTranspose, CuBlasNative.OperationNone, n, m, kDim, 1f,
                    w.DevicePointer(0), CuBlasNative.DataBFloat16, kDim,
                    xPointer, CuBlasNative.DataBFloat16, ldx,
                    0f, yTensor.DevicePointer(y.Offset), yTensor.DType == DType.BF16 ? CuBlasNative.DataBFloat16 : CuBlasNative.DataFloat32,
                    (int)y.RowStride);
        }
        else
        {
            var (xPointer, ldx, xScratch) = ProductOperand(x, DType.F32);
            // sgemm writes float32: a bf16 y receives the product through a dense float32 scratch.
            using var wideY = yTensor.DType == DType.F32 ? null : new GpuTensor(this, [m, n], floatPool.Rent((long)m * n), pooled: true);
            using var wideWeights = w.DType == DType.F32 ? null : new GpuTensor(this, w.Shape, floatPool.Rent(w.Length), pooled: true);
            using (xScratch)
            {
                if (wideWeights is not null)
                    WidenWords(wideWeights.Floats, w.Words, w.DType);
                cublas!.Sgemm(CuBlasNative.OperationTranspose, CuBlasNative.OperationNone, n, m, kDim, 1f,
                    (wideWeights ?? w).DevicePointer(0), kDim, xPointer, ldx, 0f,
                    wideY?.DevicePointer(0) ?? yTensor.DevicePointer(y.Offset), wideY is null ? (int)y.RowStride : n);
            }
            if (wideY is not null)
                Copy(y, new View(wideY, 0, y.Batch, y.Rows, n, (long)y.Rows * n, n));
        }
        // Scratch given back above is safe to reuse at once: later kernels on the same stream run after the GEMM.

        if (bias is not null)
        {
            var (_, ys, yd) = Output(y);
            kernels.AddBiasToRows((int)CheckedCount(y.ElementCount), n, ys, yd, bias.Floats);
        }
    }

    /// <summary>
    /// x as a cuBLAS operand stored as <paramref name="storage"/> (F32 or BF16): its own memory where it is stored so
    /// with a leading dimension ≥ its columns, else a dense copy (widened or rounded on the way: broadcast or overlapping
    /// rows, or the other storage) in a pooled scratch tensor the caller disposes.
    /// </summary>
    private (IntPtr Pointer, int LeadingDimension, GpuTensor? Scratch) ProductOperand(View x, DType storage)
    {
        var tensor = (GpuTensor)x.Tensor;
        if (tensor.DType == storage && x.RowStride >= x.Cols && x.RowStride <= int.MaxValue)
            return (tensor.DevicePointer(x.Offset), (int)x.RowStride, null);
        int rows = checked(x.Batch * x.Rows);
        long count = (long)rows * x.Cols;
        var scratch = storage == DType.BF16
            ? new GpuTensor(this, [rows, x.Cols], DType.BF16, wordPool.Rent(count), pooled: true)
            : new GpuTensor(this, [rows, x.Cols], floatPool.Rent(count), pooled: true);
        Copy(new View(scratch, 0, x.Batch, x.Rows, x.Cols, (long)x.Rows * x.Cols, x.Cols), x);
        return (scratch.DevicePointer(0), x.Cols, scratch);
    }

    private static View Batch(View view, int batch) =>
        view with { Offset = view.Offset + batch * view.BatchStride, Batch = 1, BatchStride = (long)view.Rows * view.RowStride };

    // ---------------------------------------------------------------- view plumbing

    private GpuTensor OwnTensor(DeviceTensor tensor, string name)
    {
        ThrowIfDisposed();
        if (tensor is not GpuTensor gpu || !ReferenceEquals(gpu.Owner, this))
            throw new ArgumentException($"{name} ({tensor}) was not allocated by this backend", name);
        if (gpu.IsQuantized)
            throw new ArgumentException(QuantizedWeights.OnlyLinearReads(gpu), name);
        return gpu;
    }

    private GpuTensor FloatTensor(View view, string name)
    {
        var tensor = OwnTensor(view.Tensor, name);
        if (tensor.DType != DType.F32)
            throw new ArgumentException($"{name} views a {tensor.DType} tensor; this op reads float32 views only", name);
        return tensor;
    }

    /// <summary>The tensor under an activation view: float32, or bf16 (<see cref="AllocateActivation"/> in BFloat16 precision).</summary>
    private GpuTensor ActivationTensor(View view, string name)
    {
        var tensor = OwnTensor(view.Tensor, name);
        if (tensor.DType is not (DType.F32 or DType.BF16))
            throw new ArgumentException($"{name} views a {tensor.DType} tensor; activation views are float32 or bf16", name);
        return tensor;
    }

    private static Elements ElementsOf(GpuTensor tensor) =>
        tensor.DType == DType.BF16 ? Elements.BFloat16(tensor.Words) : Elements.Float32(tensor.Floats);

    private static void CheckBounds(View view, GpuTensor tensor, string name)
    {
        if (view.ElementCount == 0)
            return;
        if (view.Offset < 0 || view.BatchStride < 0 || view.RowStride < 0)
            throw new ArgumentException($"{name} {view} has a negative offset or stride", name);
        long last = view.Offset + (view.Batch - 1) * view.BatchStride + (view.Rows - 1) * view.RowStride + view.Cols - 1;
        if (last >= tensor.Length)
            throw new ArgumentException($"{name} {view} reaches element {last} of a tensor of {tensor.Length}", name);
    }

    private (StridedMatrix Layout, Elements Data) Strided(View view, string name)
    {
        var tensor = ActivationTensor(view, name);
        CheckBounds(view, tensor, name);
        return (new StridedMatrix(view.Offset, view.Rows, view.BatchStride, view.RowStride), ElementsOf(tensor));
    }

    /// <summary>Validates an output view and binds the accelerator; returns its element count for a 1-D launch.</summary>
    private (int Count, StridedMatrix Layout, Elements Data) Output(View y)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        var (layout, data) = Strided(y, nameof(y));
        return ((int)CheckedCount(y.ElementCount), layout, data);
    }

    /// <summary>
    /// An input of an element-wise op, addressed with the output's flat rows: it has the output's columns and,
    /// per dimension, the output's size or 1 (broadcast with stride 0).
    /// </summary>
    private (StridedMatrix Layout, Elements Data) Operand(View operand, View output, string name)
    {
        if (operand.Cols != output.Cols)
            throw new ArgumentException($"{name} {operand} does not match or broadcast to {output}", name);
        return RowOperand(operand, output, name);
    }

    /// <summary>Like <see cref="Operand"/> without the column check: for per-row inputs such as timesteps.</summary>
    private (StridedMatrix Layout, Elements Data) RowOperand(View operand, View output, string name)
    {
        var tensor = ActivationTensor(operand, name);
        CheckBounds(operand, tensor, name);
        if ((operand.Rows != output.Rows && operand.Rows != 1) || (operand.Batch != output.Batch && operand.Batch != 1))
            throw new ArgumentException($"{name} {operand} does not match or broadcast to {output}", name);
        long rowStride = operand.Rows == output.Rows ? operand.RowStride : 0;
        long batchStride = operand.Batch == output.Batch ? operand.BatchStride : 0;
        return (new StridedMatrix(operand.Offset, output.Rows, batchStride, rowStride), ElementsOf(tensor));
    }

    /// <summary>
    /// A fused kernel's operand: rows and batches as the output's or broadcast from 1; its columns are the generated
    /// kernel's business (a per-head weight, RoPE's matrices), so only the view's own bounds are checked.
    /// </summary>
    internal (StridedMatrix Layout, Elements Data) BroadcastOperand(View operand, View output, string name)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        return RowOperand(operand, output, name);
    }

    private (StridedMatrix Layout, Elements Data) SameShapeOperand(View operand, View output, string name)
    {
        if (operand.Batch != output.Batch || operand.Rows != output.Rows || operand.Cols != output.Cols)
            throw new ArgumentException($"{name} {operand} must have the shape of {output}", name);
        return Strided(operand, name);
    }

    private static long CheckedCount(long count) =>
        count <= int.MaxValue
            ? count
            : throw new NotSupportedException($"{count} elements exceed one launch's int range; split the op");

    /// <summary>A small constant device table (frequencies, RoPE omegas), uploaded once per distinct content.</summary>
    private ArrayView<T> Table<T>(string key, Func<T[]> build) where T : unmanaged
    {
        lock (tablesGate)
        {
            if (!tables.TryGetValue(key, out var stored))
            {
                T[] values = build();
                var buffer = accelerator.Allocate1D<T>(Math.Max(values.Length, 1));
                if (values.Length > 0)
                    buffer.View.SubView(0, values.Length).AsContiguous().CopyFromCPU(new ReadOnlySpan<T>(values));
                tables[key] = stored = buffer;
            }
            return ((MemoryBuffer1D<T, Stride1D.Dense>)stored).View.AsContiguous();
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);

    public void Dispose()
    {
        if (disposed)
            return;
        accelerator.Bind();
        accelerator.Synchronize();
        FreeHostBuffers();
        disposed = true;
        cublas?.Dispose();
        residency?.Dispose();
        foreach (var table in tables.Values)
            table.Dispose();
        floatPool.Dispose();
        wordPool.Dispose();
        accelerator.Dispose();
        context.Dispose();
    }

    /// <summary>Group sizes: large on a GPU; small on the simulator, whose threads are OS threads.</summary>
    private readonly record struct LaunchShape(int RowGroup, int AttentionGroup, int GemmThreadsPerSide)
    {
        public static readonly LaunchShape Gpu = new(RowGroup: 256, AttentionGroup: 128, GemmThreadsPerSide: 16);
        public static readonly LaunchShape Simulator = new(RowGroup: 16, AttentionGroup: 16, GemmThreadsPerSide: 4);

        public int LargestGroup => Math.Max(Math.Max(RowGroup, AttentionGroup), GemmThreadsPerSide * GemmThreadsPerSide);
    }
}
