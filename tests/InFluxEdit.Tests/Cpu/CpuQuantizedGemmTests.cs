using System.Buffers.Binary;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Cpu;

/// <summary>
/// Linear and the training products with a weight held quantized equal the same ops over the decoded weight uploaded as
/// float32 (bit for bit: each output sums the same products in the same order), at sizes that are not multiples of
/// the GEMM's tiles and with enough rows and columns for several panels per thread.
/// </summary>
public class CpuQuantizedGemmTests
{
    public static TheoryData<TensorFormat, int, int> Cases()
    {
        var data = new TheoryData<TensorFormat, int, int>();
        foreach (TensorFormat format in new[]
                 {
                     TensorFormat.Q8_0, TensorFormat.Q4_0, TensorFormat.Q4_1, TensorFormat.Q5_0, TensorFormat.Q5_1,
                     TensorFormat.Q2_K, TensorFormat.Q3_K, TensorFormat.Q4_K, TensorFormat.Q5_K, TensorFormat.Q6_K,
                     TensorFormat.F8_E4M3, TensorFormat.F8_E5M2,
                 })
        {
            // in: two blocks (fp8 has none: an odd width); out: odd, not a whole tile.
            int inFeatures = format.IsBlockQuantized() ? 2 * format.BlockElements() : 45;
            data.Add(format, 37, inFeatures);
        }
        // Several panels in both directions: 2100 rows of 512 are two row panels and two column panels.
        data.Add(TensorFormat.Q8_0, 2100, 512);
        data.Add(TensorFormat.Q4_K, 1100, 1024);
        return data;
    }

    /// <summary>
    /// A weight in <paramref name="format"/>: our quantizer's output, or for Q2_K, Q3_K and Q5_K random blocks whose float16
    /// scales are set to small normal values (every bit pattern of the rest is a valid code), so the products also meet
    /// codes and scale bits a quantizer never writes. fp8 carries a power-of-two scale.
    /// </summary>
    internal static QuantizedBlocks Weight(TensorFormat format, int rows, int columns, Random random)
    {
        long count = (long)rows * columns;
        if (format is not (TensorFormat.Q2_K or TensorFormat.Q3_K or TensorFormat.Q5_K))
        {
            var values = new float[count];
            for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() - 0.5) * 0.2f;
            return QuantizationPlan.Quantize(format, values);
        }
        var bytes = new byte[format.ByteCount([rows, columns])!.Value];
        random.NextBytes(bytes);
        int[] halves = format switch
        {
            TensorFormat.Q2_K => [80, 82],
            TensorFormat.Q3_K => [108],
            TensorFormat.Q5_K => [0, 2],
            _ => throw new ArgumentOutOfRangeException(nameof(format)),
        };
        for (int block = 0; block < bytes.Length / format.BlockBytes(); block++)
            foreach (int offset in halves)
                BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(block * format.BlockBytes() + offset, 2), (Half)((random.NextDouble() + 0.5) * 1e-3));
        return new QuantizedBlocks(format, bytes, 1f, count);
    }

    private static (DeviceTensor Quantized, DeviceTensor Decoded) Upload(CpuBackend backend, TensorFormat format, int rows, int columns, int seed)
    {
        var weight = Weight(format, rows, columns, new Random(seed));
        float[] decoded = weight.Decode();
        var quantized = backend.UploadQuantizedWeight([rows, columns], weight);
        var dense = backend.Upload(new HostTensor([rows, columns], decoded));
        return (quantized, dense);
    }

    private static float[] Read(CpuBackend backend, DeviceTensor tensor) => backend.Download(tensor, tensor.Shape).Data;

    [Theory]
    [MemberData(nameof(Cases))]
    public void LinearWithAQuantizedWeightEqualsLinearWithItsDecodedWeight(TensorFormat format, int outFeatures, int inFeatures)
    {
        using var s = new CpuTestSupport(outFeatures + inFeatures + (int)format);
        var (quantized, decoded) = Upload(s.Backend, format, outFeatures, inFeatures, seed: 5);
        using var bias = s.RandomTensor(outFeatures);
        quantized.StoredBytes.ShouldBe(format.ByteCount([outFeatures, inFeatures])!.Value);
        ((CpuQuantizedTensor)quantized).Format.ShouldBe(format);
        // 1 and 5 rows take the GEMM's small-M path, 29 the packed one.
        foreach (int rows in new[] { 1, 5, 29 })
        {
            using var x = s.RandomTensor(rows, inFeatures);
            using var expected = s.Backend.Allocate([rows, outFeatures]);
            using var actual = s.Backend.Allocate([rows, outFeatures]);
            s.Backend.Linear(expected, x, decoded, bias);
            s.Backend.Linear(actual, x, quantized, bias);
            Read(s.Backend, actual).ShouldBe(Read(s.Backend, expected), $"{rows} rows");
        }
        quantized.Dispose();
        decoded.Dispose();
    }

    /// <summary>The products a linear layer's backward runs with the base weight: dx = alpha·dy·W + beta·dx and y = alpha·x·Wᵀ + beta·y, over a batch.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void TrainingProductsWithAQuantizedWeightEqualThoseWithItsDecodedWeight(TensorFormat format, int outFeatures, int inFeatures)
    {
        using var s = new CpuTestSupport(3 * outFeatures + inFeatures + (int)format);
        var (quantized, decoded) = Upload(s.Backend, format, outFeatures, inFeatures, seed: 6);
        foreach (bool transposeB in new[] { false, true })
        foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, 1f), (2f, -0.75f) })
        {
            int aCols = transposeB ? inFeatures : outFeatures, cCols = transposeB ? outFeatures : inFeatures;
            using var a = s.RandomTensor(2, 9, aCols);
            using var start = s.RandomTensor(2, 9, cCols);
            using var expected = s.Backend.Allocate([2, 9, cCols]);
            using var actual = s.Backend.Allocate([2, 9, cCols]);
            s.Backend.Copy(expected, start);
            s.Backend.Copy(actual, start);
            s.Backend.Gemm(expected, a, false, decoded, transposeB, alpha, beta);
            s.Backend.Gemm(actual, a, false, quantized, transposeB, alpha, beta);
            Read(s.Backend, actual).ShouldBe(Read(s.Backend, expected), $"transposeB {transposeB}, alpha {alpha}, beta {beta}");
        }
        quantized.Dispose();
        decoded.Dispose();
    }

    [Fact]
    public void AWeightWhoseRowsAreNotWholeBlocksIsRefusedWithTheReason()
    {
        using var backend = new CpuBackend();
        var blocks = new QuantizedBlocks(TensorFormat.Q4_K, new byte[144 * 3], 1f, 3 * 256);
        var error = Should.Throw<ArgumentException>(() => backend.UploadQuantizedWeight([4, 192], blocks));
        error.Message.ShouldContain("whole 256-value blocks");
        error.Message.ShouldContain("rows of 192");
        Should.Throw<ArgumentException>(() => backend.UploadQuantizedWeight([3, 1, 256], blocks)).Message.ShouldContain("[out, in]");
        Should.Throw<ArgumentException>(() => backend.UploadQuantizedWeight([2, 256], blocks)).Message.ShouldContain("do not make");
    }

    [Fact]
    public void OpsThatCannotReadQuantizedBlocksSaySo()
    {
        using var s = new CpuTestSupport(1);
        var (quantized, decoded) = Upload(s.Backend, TensorFormat.Q8_0, 4, 32, seed: 2);
        using var y = s.Backend.Allocate([4, 32]);
        Should.Throw<ArgumentException>(() => s.Backend.Copy(y, quantized)).Message.ShouldContain("held quantized");
        using var x = s.RandomTensor(3, 4);
        using var slice = s.Backend.Allocate([3, 16]);
        Should.Throw<ArgumentException>(() => s.Backend.Gemm(slice, x, false, quantized.AsView().Columns(0, 16), false, 1f, 0f))
            .Message.ShouldContain("as a whole");
        quantized.Dispose();
        decoded.Dispose();
        using var rows = s.RandomTensor(2, 32);
        using var output = s.Backend.Allocate([2, 4]);
        Should.Throw<ObjectDisposedException>(() => s.Backend.Linear(output, rows, quantized, null));
    }
}
