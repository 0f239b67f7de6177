using System.Runtime.InteropServices;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Cpu;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Checks of weights held quantized on an <see cref="IlgpuBackend"/>, the same on the CPU simulator (tiny sizes, every
/// run) and on CUDA (larger sizes, where a GPU is): the device dequantization against <see cref="TensorDecoder"/> bit for
/// bit, and Linear and the backward products over the blocks against the same ops over a reference weight uploaded
/// plain, exactly. The reference is the decoded float32 weight, or, where cuBLAS runs <see cref="GpuPrecision.BFloat16"/>
/// (GemmEx on bf16 words), the decoded values rounded to bf16 and uploaded as a bf16 weight: both sides then run the same
/// GEMM on the same inputs.
/// </summary>
public sealed class QuantizedOpChecks(IlgpuBackend backend)
{
    public static readonly TensorFormat[] Formats =
    [
        TensorFormat.F8_E4M3, TensorFormat.F8_E5M2, TensorFormat.Q8_0, TensorFormat.Q4_0, TensorFormat.Q4_1, TensorFormat.Q5_0,
        TensorFormat.Q5_1, TensorFormat.Q2_K, TensorFormat.Q3_K, TensorFormat.Q4_K, TensorFormat.Q5_K, TensorFormat.Q6_K,
    ];

    /// <summary>
    /// Every byte random (every code, every float16 scale: subnormal, infinite and NaN ones too), with scale 1 and, for
    /// fp8, the power-of-two scale a scaled fp8 checkpoint carries; the bf16 scratch is each value rounded to nearest even.
    /// </summary>
    public void Dequantization(TensorFormat format, int outFeatures, int inFeatures)
    {
        var bytes = new byte[format.ByteCount([outFeatures, inFeatures])!.Value];
        new Random(17 + (int)format).NextBytes(bytes);
        foreach (float scale in format.IsBlockQuantized() ? [1f] : new[] { 1f, 0.0625f })
        {
            var blocks = new QuantizedBlocks(format, bytes, scale, (long)outFeatures * inFeatures);
            float[] expected = blocks.Decode();
            using var weight = (GpuTensor)backend.UploadQuantizedWeight([outFeatures, inFeatures], blocks);
            weight.StoredBytes.ShouldBe(bytes.LongLength);

            using (var decoded = backend.Dequantize(weight, toBFloat16: false))
            {
                float[] actual = Read(decoded);
                for (int i = 0; i < expected.Length; i++)
                    if (!(float.IsNaN(expected[i]) && float.IsNaN(actual[i])))
                        BitConverter.SingleToUInt32Bits(actual[i]).ShouldBe(BitConverter.SingleToUInt32Bits(expected[i]),
                            $"{format} × {scale}, value {i}: {actual[i]} against {expected[i]}");
            }
            using (var decoded = backend.Dequantize(weight, toBFloat16: true))
            {
                var words = new ushort[expected.Length];
                decoded.Words.CopyToCPU(words);
                for (int i = 0; i < expected.Length; i++)
                    if (!float.IsNaN(expected[i]))
                        words[i].ShouldBe(BFloat16.FromSingle(expected[i]), $"{format} × {scale}, value {i} as bf16");
            }
        }
    }

    /// <summary>Linear over the blocks and over the reference weight, with a bias, over a batch of 2 for each row count.</summary>
    public void Linear(TensorFormat format, int outFeatures, int inFeatures, params int[] rowCounts)
    {
        var (quantized, reference) = Upload(format, outFeatures, inFeatures, seed: 3);
        var random = new Random(4);
        using var bias = backend.Upload(RandomHost(random, outFeatures));
        foreach (int rows in rowCounts)
        {
            using var x = backend.Upload(RandomHost(random, 2, rows, inFeatures));
            using var expected = backend.Allocate([2, rows, outFeatures]);
            using var actual = backend.Allocate([2, rows, outFeatures]);
            backend.Linear(expected, x, reference, bias);
            backend.Linear(actual, x, quantized, bias);
            Read(actual).ShouldBe(Read(expected), $"{format}, {rows} rows");
        }
        quantized.Dispose();
        reference.Dispose();
    }

    /// <summary>The products of a linear layer's backward: dx = alpha·dy·W + beta·dx and y = alpha·x·Wᵀ + beta·y, over a batch.</summary>
    public void BackwardProducts(TensorFormat format, int outFeatures, int inFeatures, int rows)
    {
        var (quantized, reference) = Upload(format, outFeatures, inFeatures, seed: 5);
        var random = new Random(6);
        foreach (bool transposeB in new[] { false, true })
        {
            var (alpha, beta) = transposeB ? (1f, 0f) : (0.5f, -0.75f);
            int aCols = transposeB ? inFeatures : outFeatures, cCols = transposeB ? outFeatures : inFeatures;
            using var a = backend.Upload(RandomHost(random, 2, rows, aCols));
            var start = RandomHost(random, 2, rows, cCols);
            using var expected = backend.Upload(start);
            using var actual = backend.Upload(start);
            backend.Gemm(expected, a, false, reference, transposeB, alpha, beta);
            backend.Gemm(actual, a, false, quantized, transposeB, alpha, beta);
            Read(actual).ShouldBe(Read(expected), $"{format}, transposeB {transposeB}");
        }
        quantized.Dispose();
        reference.Dispose();
    }

    /// <summary>The weight held quantized and its reference (see the class summary).</summary>
    public (DeviceTensor Quantized, DeviceTensor Reference) Upload(TensorFormat format, int outFeatures, int inFeatures, int seed)
    {
        var weight = CpuQuantizedGemmTests.Weight(format, outFeatures, inFeatures, new Random(seed));
        var quantized = backend.UploadQuantizedWeight([outFeatures, inFeatures], weight);
        float[] decoded = weight.Decode();
        int[] shape = [outFeatures, inFeatures];
        if (!(backend.UsesCuBlas && backend.Precision == GpuPrecision.BFloat16))
            return (quantized, backend.UploadWeight(shape, DType.F32, MemoryMarshal.AsBytes(decoded.AsSpan())));
        ushort[] words = Array.ConvertAll(decoded, BFloat16.FromSingle);
        return (quantized, backend.UploadWeight(shape, DType.BF16, MemoryMarshal.AsBytes(words.AsSpan())));
    }

    public static HostTensor RandomHost(Random random, params int[] shape)
    {
        var host = new HostTensor(shape);
        for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return host;
    }

    public float[] Read(DeviceTensor tensor) => backend.Download(tensor.AsView(), tensor.Shape).Data;
}
