using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// Linear weights held in their quantized blocks on the device (fp8 or a ggml block format): what lets the 12B
/// transformer (23.8 GB in bf16) fit a 24 GB card at Q8_0 (~12.7 GB) or Q4_K (~6.8 GB). A product that reads such a
/// weight first dequantizes the whole of it (<see cref="DequantizeKernels"/>) into a scratch buffer from the pools, runs
/// the float path it would run for a float weight, and gives the scratch back: only one layer's float weight exists at
/// a time. Under <see cref="GpuPrecision.Float32"/> the scratch is float32, so results equal those over the decoded
/// weight uploaded as float32 bit for bit; under <see cref="GpuPrecision.BFloat16"/> on cuBLAS it is bf16 words for
/// GemmEx, since rounding the GEMM inputs to bf16 is that precision's promise. FLUX's largest weight (21504×3072)
/// takes a 256 MiB float32 scratch (a 67,108,864-value pool bucket), 128 MiB as bf16, counted in the pools'
/// <see cref="IMemoryStatistics"/> bytes like every other scratch.
/// </summary>
public sealed partial class IlgpuBackend
{
    private Action<Index1D, int, float, ArrayView<byte>, ArrayView<float>, ArrayView<float>>? dequantizeToFloat32;
    private Action<Index1D, int, float, ArrayView<byte>, ArrayView<float>, ArrayView<ushort>>? dequantizeToBFloat16;

    /// <summary>
    /// Keeps the blocks on the device (an exact allocation, as weights are), or with weight offloading in host memory,
    /// copied into the offload arena when a product reads them; only <see cref="Linear"/> and the training products of
    /// its backward read them. Plain float formats, which hold no blocks, are decoded here instead.
    /// </summary>
    public DeviceTensor UploadQuantizedWeight(int[] shape, QuantizedBlocks weight)
    {
        QuantizedWeights.RequireLinearShape(shape, weight);
        if (weight.Format.AsDType() is not null)
            return UploadWeight(shape, DType.F32, MemoryMarshal.AsBytes(weight.Decode().AsSpan()));
        ThrowIfDisposed();
        accelerator.Bind();
        largestQuantizedLength = Math.Max(largestQuantizedLength, HostTensor.ElementCount(shape));
        if (Offloads(shape))
            return new GpuTensor(this, (int[])shape.Clone(), weight.Format, weight.Scale, blocks: null,
                residency!.Register(weight.Bytes, $"a {weight.Format}{HostTensor.FormatShape(shape)} weight"));
        var blocks = accelerator.Allocate1D<byte>(Math.Max(weight.Bytes.LongLength, 1));
        if (weight.Bytes.Length > 0)
            blocks.View.SubView(0, weight.Bytes.LongLength).AsContiguous().CopyFromCPU(weight.Bytes);
        return new GpuTensor(this, (int[])shape.Clone(), weight.Format, weight.Scale, blocks);
    }

    public bool HoldsQuantizedWeights => true;

    /// <summary>Elements of the largest quantized weight uploaded: the size of every dequantization scratch.</summary>
    private long largestQuantizedLength;

    /// <summary>
    /// The weight's values in a pooled scratch tensor of its shape: float32, or bf16 words (rounded to nearest even).
    /// Disposing it gives the buffer back to the pool; kernels queued on it still run first, on the same stream.
    /// </summary>
    internal GpuTensor Dequantize(GpuTensor weight, bool toBFloat16)
    {
        ThrowIfDisposed();
        accelerator.Bind();
        ArrayView<byte> blocks = weight.Blocks;
        int count = (int)CheckedCount(weight.Length), format = (int)weight.Format!.Value;
        var fp8Tables = Table("fp8-values", DequantizeKernels.Fp8Tables);
        long length = GpuMemoryPolicy.DequantizeScratchLength(weight.Length, largestQuantizedLength);
        GpuTensor scratch = toBFloat16
            ? new GpuTensor(this, weight.Shape, DType.BF16, wordPool.Rent(length), pooled: true)
            : new GpuTensor(this, weight.Shape, floatPool.Rent(length), pooled: true);
        try
        {
            if (count == 0)
                return scratch;
            if (toBFloat16)
            {
                LazyInitializer.EnsureInitialized(ref dequantizeToBFloat16, () =>
                    accelerator.LoadAutoGroupedStreamKernel<Index1D, int, float, ArrayView<byte>, ArrayView<float>, ArrayView<ushort>>(DequantizeKernels.DequantizeToBFloat16));
                dequantizeToBFloat16(count, format, weight.Scale, blocks, fp8Tables, scratch.Words);
            }
            else
            {
                LazyInitializer.EnsureInitialized(ref dequantizeToFloat32, () =>
                    accelerator.LoadAutoGroupedStreamKernel<Index1D, int, float, ArrayView<byte>, ArrayView<float>, ArrayView<float>>(DequantizeKernels.DequantizeToFloat32));
                dequantizeToFloat32(count, format, weight.Scale, blocks, fp8Tables, scratch.Floats);
            }
            return scratch;
        }
        catch
        {
            scratch.Dispose();
            throw;
        }
    }

    /// <summary>Linear over the dequantized weight: the same path (cuBLAS or the ILGPU GEMM) a float weight takes.</summary>
    private void LinearWithQuantizedWeight(View y, View x, GpuTensor weight, DeviceTensor? bias)
    {
        RequireOwnQuantized(weight, nameof(weight));
        if (weight.Shape[1] != x.Cols || weight.Shape[0] != y.Cols)
            throw new ArgumentException($"weight {weight} is not [{y.Cols}, {x.Cols}] for x {x} → y {y}", nameof(weight));
        using var decoded = Dequantize(weight, toBFloat16: cublas is not null && Precision == GpuPrecision.BFloat16);
        Linear(y, x, decoded, bias);
    }

    /// <summary>The products of a linear layer's backward (dx = dy·W, y = x·Wᵀ) over the dequantized weight.</summary>
    private void GemmWithQuantizedWeight(View c, View a, bool transposeA, View b, GpuTensor weight, bool transposeB, float alpha, float beta)
    {
        RequireOwnQuantized(weight, nameof(b));
        var (_, _, _, _, sumOverBatches) = ViewRules.GemmSizes(c, a, transposeA, b, transposeB);
        QuantizedWeights.RequireWholeProductOperand(weight, b, transposeA, sumOverBatches);
        bool gemmEx = cublas is not null && TrainingGemmOnCuBlasEnabled && Precision == GpuPrecision.BFloat16;
        using var decoded = Dequantize(weight, toBFloat16: gemmEx);
        Gemm(c, a, transposeA, View.Of(decoded), transposeB, alpha, beta);
    }

    private void RequireOwnQuantized(GpuTensor weight, string name)
    {
        ThrowIfDisposed();
        if (!ReferenceEquals(weight.Owner, this))
            throw new ArgumentException($"{name} ({weight}) was not allocated by this backend", name);
    }

    internal void ReturnToPool(MemoryBuffer1D<ushort, Stride1D.Dense> buffer)
    {
        if (disposed)
            buffer.Dispose();
        else
            wordPool.Return(buffer);
    }
}
