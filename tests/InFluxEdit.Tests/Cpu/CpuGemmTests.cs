using System.Runtime.Intrinsics.X86;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Cpu;

public unsafe class CpuGemmTests
{
    private const double GemmTolerance = 1e-5;

    public static TheoryData<int, int, int> RaggedSizes()
    {
        var data = new TheoryData<int, int, int>();
        int[] sizes = { 1, 3, 17, 67, 130, 257 };
        var random = new Random(7);
        foreach (int m in sizes)
            foreach (int n in sizes)
                data.Add(m, n, sizes[random.Next(sizes.Length)]);
        data.Add(300, 70, 600); // more than one K block and one M block
        data.Add(13, 600, 5);   // more than one N block
        data.Add(5, 9, 0);      // no reduction: C is the bias
        return data;
    }

    public static IEnumerable<object[]> Kernels()
    {
        if (Avx512F.IsSupported) yield return new object[] { "Avx512" };
        if (Fma.IsSupported && Avx.IsSupported) yield return new object[] { "Avx2" };
        yield return new object[] { "Portable" };
    }

    [Theory]
    [MemberData(nameof(RaggedSizes))]
    public void Multiply_matches_float64_on_ragged_sizes_with_padded_strides(int m, int n, int k)
    {
        var random = new Random(m * 1000 + n * 10 + k);
        int lda = k + 3, ldb = k + 5, ldc = n + 2;
        float[] a = RandomArray(random, (long)Math.Max(m - 1, 0) * lda + k);
        float[] b = RandomArray(random, (long)Math.Max(n - 1, 0) * ldb + k);
        float[] bias = RandomArray(random, n);
        float[] c = Enumerable.Repeat(float.NaN, Math.Max(m - 1, 0) * ldc + n).ToArray();

        CpuGemm.Multiply(m, n, k, a, lda, b, ldb, c, ldc, bias);

        double[] expected = ReferenceProduct(m, n, k, i => a.AsSpan(i * lda, k).ToArray(), j => b.AsSpan(j * ldb, k).ToArray(), bias);
        CpuTestSupport.ShouldMatch(Rows(c, m, n, ldc), expected, GemmTolerance);
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Every_micro_kernel_matches_float64_for_both_B_layouts(string kernelName)
    {
        var kernel = Enum.Parse<GemmKernel>(kernelName);
        var random = new Random((int)kernel);
        foreach ((int m, int n, int k) in new[] { (67, 130, 257), (17, 3, 300), (130, 33, 17), (7, 40, 9) })
            foreach (bool bIsKByN in new[] { false, true })
                foreach (bool withBias in new[] { false, true })
                {
                    float[] a = RandomArray(random, m * k);
                    float[] b = RandomArray(random, n * k);
                    float[] bias = RandomArray(random, n);
                    float[] c = new float[m * n];
                    fixed (float* pa = a, pb = b, pc = c, pbias = bias)
                    {
                        var problem = new GemmProblem(m, n, k, pa, k, pb, bIsKByN ? n : k, bIsKByN, pc, n, withBias ? pbias : null);
                        CpuGemm.Multiply(problem, kernel, parallel: true);
                    }
                    Func<int, float[]> bRow = bIsKByN
                        ? j => Enumerable.Range(0, k).Select(p => b[p * n + j]).ToArray()
                        : j => b.AsSpan(j * k, k).ToArray();
                    double[] expected = ReferenceProduct(m, n, k, i => a.AsSpan(i * k, k).ToArray(), bRow, withBias ? bias : null);
                    CpuTestSupport.ShouldMatch(c.Select(v => (double)v).ToArray(), expected, GemmTolerance);
                }
    }

    [Fact]
    public void A_row_stride_of_zero_repeats_one_row()
    {
        var random = new Random(3);
        const int m = 20, n = 35, k = 50;
        float[] a = RandomArray(random, k), b = RandomArray(random, n * k), c = new float[m * n];
        CpuGemm.Multiply(m, n, k, a, 0, b, k, c, n);
        double[] expected = ReferenceProduct(m, n, k, _ => a, j => b.AsSpan(j * k, k).ToArray(), null);
        CpuTestSupport.ShouldMatch(c.Select(v => (double)v).ToArray(), expected, GemmTolerance);
    }

    [Fact]
    public void Spans_too_short_for_the_product_are_rejected()
    {
        Should.Throw<ArgumentException>(() => CpuGemm.Multiply(4, 4, 4, new float[15], 4, new float[16], 4, new float[16], 4));
        Should.Throw<ArgumentException>(() => CpuGemm.Multiply(4, 4, 4, new float[16], 3, new float[16], 4, new float[16], 4));
    }

    [Fact]
    public void Linear_stacks_batches_and_loops_over_batches_that_do_not_stack()
    {
        using var s = new CpuTestSupport(11);
        const int batch = 3, rows = 19, inFeatures = 70, outFeatures = 45;
        CpuTensor weight = s.RandomTensor(outFeatures, inFeatures);
        CpuTensor bias = s.RandomTensor(outFeatures);

        // x: columns [5, 75) of a wider tensor (row stride 80); y: rows [2, 21) of each batch of a taller one,
        // whose batches are not consecutive row blocks.
        CpuTensor wideX = s.RandomTensor(batch, rows, 80);
        View x = wideX.AsView().Columns(5, inFeatures);
        CpuTensor tallY = s.RandomTensor(batch, rows + 4, outFeatures + 3);
        View y = tallY.AsView().RowRange(2, rows).Columns(1, outFeatures);
        y.BatchesStackAsRows.ShouldBeFalse();

        s.Backend.Linear(y, x, weight, bias);
        CpuTestSupport.ShouldMatch(CpuTestSupport.Read(y), ReferenceLinear(x, weight, bias), GemmTolerance);

        // Contiguous batches take the single stacked product.
        CpuTensor denseX = s.RandomTensor(batch, rows, inFeatures);
        CpuTensor denseY = s.RandomTensor(batch, rows, outFeatures);
        s.Backend.Linear(denseY.AsView(), denseX.AsView(), weight, null);
        CpuTestSupport.ShouldMatch(CpuTestSupport.Read(denseY.AsView()), ReferenceLinear(denseX.AsView(), weight, null), GemmTolerance);
    }

    [Fact]
    public void Linear_with_two_rows_matches_float64_like_a_modulation()
    {
        using var s = new CpuTestSupport(12);
        CpuTensor weight = s.RandomTensor(6 * 96 + 3, 200);
        CpuTensor bias = s.RandomTensor(6 * 96 + 3);
        CpuTensor x = s.RandomTensor(2, 200), y = s.RandomTensor(2, 6 * 96 + 3);
        s.Backend.Linear(y.AsView(), x.AsView(), weight, bias);
        CpuTestSupport.ShouldMatch(CpuTestSupport.Read(y.AsView()), ReferenceLinear(x.AsView(), weight, bias), GemmTolerance);
    }

    [Fact]
    public void Linear_rejects_mismatched_shapes()
    {
        using var s = new CpuTestSupport(13);
        CpuTensor weight = s.RandomTensor(8, 4);
        Should.Throw<ArgumentException>(() => s.Backend.Linear(s.RandomTensor(2, 8).AsView(), s.RandomTensor(2, 5).AsView(), weight, null));
        Should.Throw<ArgumentException>(() => s.Backend.Linear(s.RandomTensor(2, 7).AsView(), s.RandomTensor(2, 4).AsView(), weight, null));
    }

    [Fact]
    public void Weights_are_widened_exactly_from_bf16_f16_f64_and_f32()
    {
        using var s = new CpuTestSupport(14);
        float[] values = Enumerable.Range(0, 77).Select(i => (float)((i - 38) * 0.37)).Append(float.PositiveInfinity).Append(-0f).ToArray();
        int[] shape = { values.Length };

        // bf16 keeps the upper 16 bits: widen what truncation kept.
        byte[] bf16 = values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >>> 16))).ToArray();
        float[] bf16Expected = values.Select(v => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000))).ToArray();
        ((CpuTensor)s.Backend.UploadWeight(shape, DType.BF16, bf16)).Span.ToArray().ShouldBe(bf16Expected);

        byte[] f16 = values.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray();
        ((CpuTensor)s.Backend.UploadWeight(shape, DType.F16, f16)).Span.ToArray().ShouldBe(values.Select(v => (float)(Half)v).ToArray());

        byte[] f64 = values.SelectMany(v => BitConverter.GetBytes((double)v + 1e-12)).ToArray();
        ((CpuTensor)s.Backend.UploadWeight(shape, DType.F64, f64)).Span.ToArray().ShouldBe(values.Select(v => (float)((double)v + 1e-12)).ToArray());

        byte[] f32 = values.SelectMany(BitConverter.GetBytes).ToArray();
        var weight = (CpuTensor)s.Backend.UploadWeight(shape, DType.F32, f32);
        weight.Span.ToArray().ShouldBe(values);
        weight.DType.ShouldBe(DType.F32);

        Should.Throw<ArgumentException>(() => s.Backend.UploadWeight(shape, DType.BF16, new byte[3]));
    }

    private static float[] RandomArray(Random random, long length)
    {
        var values = new float[length];
        for (long i = 0; i < length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    private static double[] Rows(float[] c, int m, int n, int ldc)
    {
        var values = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) values[i * n + j] = c[i * ldc + j];
        return values;
    }

    private static double[] ReferenceProduct(int m, int n, int k, Func<int, float[]> aRow, Func<int, float[]> bRow, float[]? bias)
    {
        var expected = new double[m * n];
        float[][] bRows = Enumerable.Range(0, n).Select(bRow).ToArray();
        for (int i = 0; i < m; i++)
        {
            float[] a = aRow(i);
            for (int j = 0; j < n; j++)
            {
                double sum = bias is null ? 0 : bias[j];
                for (int p = 0; p < k; p++) sum += (double)a[p] * bRows[j][p];
                expected[i * n + j] = sum;
            }
        }
        return expected;
    }

    private static double[] ReferenceLinear(View x, CpuTensor weight, CpuTensor? bias)
    {
        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        float[] w = weight.Span.ToArray();
        float[]? b = bias?.Span.ToArray();
        var expected = new List<double>();
        for (int batch = 0; batch < x.Batch; batch++)
            for (int r = 0; r < x.Rows; r++)
                for (int o = 0; o < outFeatures; o++)
                {
                    double sum = b is null ? 0 : b[o];
                    for (int i = 0; i < inFeatures; i++) sum += CpuTestSupport.At(x, batch, r, i) * w[o * inFeatures + i];
                    expected.Add(sum);
                }
        return expected.ToArray();
    }
}
