using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>The register-blocked inner loops, fastest first; tests force the slower ones to cover them too.</summary>
internal enum GemmKernel
{
    Avx512,
    Avx2,
    Portable,
}

/// <summary>
/// One matrix product C[M,N] = A[M,K]·op(B) (+ bias[N]), row-major with leading dimensions in elements.
/// op(B) is Bᵀ when B is stored [N, K] (a PyTorch weight, keys in attention) and B itself when it is [K, N]
/// (values in attention).
/// </summary>
internal readonly unsafe struct GemmProblem
{
    public GemmProblem(int m, int n, int k, float* a, long lda, float* b, long ldb, bool bIsKByN, float* c, long ldc, float* bias)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(m), $"negative GEMM size {m}×{n}×{k}");
        M = m; N = n; K = k; A = a; Lda = lda; B = b; Ldb = ldb; BIsKByN = bIsKByN; C = c; Ldc = ldc; Bias = bias;
    }

    public readonly int M, N, K;
    public readonly float* A, B, C, Bias;
    public readonly long Lda, Ldb, Ldc;
    public readonly bool BIsKByN;
}

/// <summary>
/// Packed, cache-blocked float32 GEMM (the GotoBLAS/BLIS loop nest). Per K block of KC, an NC-column block of B is
/// packed into NR-wide micro-panels that stay in L2, the A rows into MR-high micro-panels that stay in L1, and a
/// register-blocked micro-kernel accumulates each MR×NR tile of C entirely in vector registers. Threads split C
/// into disjoint column or row ranges, each with its own pack buffers, so they never synchronise inside a product.
/// </summary>
public static unsafe partial class CpuGemm
{
    private const int MaxMR = 12, MaxNR = 32;

    /// <summary>Products with at most this many rows skip packing: they are bound by streaming B once.</summary>
    private const int SmallM = 6;

    /// <summary>Below this many flops one thread is faster than waking another.</summary>
    private const long ParallelFlopThreshold = 2_000_000;

    internal static readonly GemmKernel BestKernel =
        Avx512F.IsSupported ? GemmKernel.Avx512
        : Fma.IsSupported && Avx.IsSupported ? GemmKernel.Avx2
        : GemmKernel.Portable;

    /// <summary>Which micro-kernel runs, for the backend's description.</summary>
    public static string KernelDescription => BestKernel switch
    {
        GemmKernel.Avx512 => "AVX-512 FMA GEMM (12×32 micro-kernel, 512-bit)",
        GemmKernel.Avx2 => "AVX2 FMA GEMM (6×16 micro-kernel, 256-bit)",
        _ => "scalar GEMM (no AVX2/FMA)",
    };

    /// <summary>
    /// C[M,N] = A[M,K]·B[N,K]ᵀ (+ bias[N]) on all cores. Row-major; lda, ldb, ldc are row strides in elements
    /// (lda may be 0 to repeat one row of A). C must not overlap A or B.
    /// </summary>
    public static void Multiply(int m, int n, int k, float* a, long lda, float* b, long ldb, float* c, long ldc, float* bias = null)
        => Multiply(new GemmProblem(m, n, k, a, lda, b, ldb, bIsKByN: false, c, ldc, bias), BestKernel, parallel: true);

    /// <summary>The span form of <see cref="Multiply(int,int,int,float*,long,float*,long,float*,long,float*)"/>, with bounds checked.</summary>
    public static void Multiply(int m, int n, int k, ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb,
        Span<float> c, int ldc, ReadOnlySpan<float> bias = default)
    {
        RequireExtent(nameof(a), a.Length, m, k, lda);
        RequireExtent(nameof(b), b.Length, n, k, ldb);
        RequireExtent(nameof(c), c.Length, m, n, ldc);
        if (!bias.IsEmpty && bias.Length < n) throw new ArgumentException($"bias has {bias.Length} elements, need {n}", nameof(bias));
        fixed (float* pa = a, pb = b, pc = c, pbias = bias)
            Multiply(new GemmProblem(m, n, k, pa, lda, pb, ldb, bIsKByN: false, pc, ldc, bias.IsEmpty ? null : pbias), BestKernel, parallel: true);
    }

    private static void RequireExtent(string name, int length, int rows, int cols, int ld)
    {
        if (rows == 0 || cols == 0) return;
        if (ld < 0 || (ld < cols && !(ld == 0 && name == "a")))
            throw new ArgumentException($"leading dimension {ld} is smaller than the {cols} columns", name);
        long needed = (long)(rows - 1) * ld + cols;
        if (length < needed) throw new ArgumentException($"{name} has {length} elements, a {rows}×{cols} matrix with stride {ld} needs {needed}", name);
    }

    internal static void Multiply(in GemmProblem problem, GemmKernel kernel, bool parallel)
    {
        GemmProblem p = problem;
        if (p.M == 0 || p.N == 0) return;
        long flops = 2L * p.M * p.N * Math.Max(1, p.K);
        int threads = parallel && flops >= ParallelFlopThreshold ? CpuParallel.ThreadCount : 1;

        if (p.M <= SmallM)
        {
            // Streaming B dominates: split its rows (the output columns) so each core reads half of it.
            int[] cuts = Cuts(p.N, threads, 16);
            CpuParallel.ForTasks(cuts.Length - 1, t => MultiplySmallM(p, cuts[t], cuts[t + 1]));
            return;
        }

        GemmGeometry g = GemmGeometry.For(kernel);
        bool splitColumns = (p.N + g.NR - 1) / g.NR >= (p.M + g.MR - 1) / g.MR;
        int[] ranges = splitColumns ? Cuts(p.N, threads, g.NR) : Cuts(p.M, threads, g.MR);
        CpuParallel.ForTasks(ranges.Length - 1, t =>
        {
            if (splitColumns) MultiplyBlocked(p, kernel, 0, p.M, ranges[t], ranges[t + 1]);
            else MultiplyBlocked(p, kernel, ranges[t], ranges[t + 1], 0, p.N);
        });
    }

    /// <summary>One product on the calling thread (inside an already parallel op such as attention).</summary>
    internal static void MultiplySerial(in GemmProblem p, GemmKernel kernel)
    {
        if (p.M == 0 || p.N == 0) return;
        if (p.M <= SmallM) MultiplySmallM(p, 0, p.N);
        else MultiplyBlocked(p, kernel, 0, p.M, 0, p.N);
    }

    /// <summary>Boundaries splitting [0, count) into at most <paramref name="parts"/> ranges aligned to <paramref name="align"/>.</summary>
    private static int[] Cuts(int count, int parts, int align)
    {
        int units = (count + align - 1) / align;
        parts = Math.Max(1, Math.Min(parts, units));
        var cuts = new int[parts + 1];
        for (int i = 1; i <= parts; i++) cuts[i] = Math.Min(count, (int)((long)units * i / parts) * align);
        cuts[parts] = count;
        return cuts;
    }

    /// <summary>The blocked loop nest over C[m0..m1, n0..n1] on the calling thread.</summary>
    internal static void MultiplyBlocked(in GemmProblem p, GemmKernel kernel, int m0, int m1, int n0, int n1)
    {
        if (p.K == 0)
        {
            FillWithBias(p, m0, m1, n0, n1);
            return;
        }
        GemmGeometry g = GemmGeometry.For(kernel);
        PackBuffers buffers = PackBuffers.ForCurrentThread(g);

        for (int jc = n0; jc < n1; jc += g.NC)
        {
            int nc = Math.Min(g.NC, n1 - jc);
            for (int pc = 0; pc < p.K; pc += g.KC)
            {
                int kc = Math.Min(g.KC, p.K - pc);
                bool accumulate = pc > 0;
                if (p.BIsKByN) PackColumnPanels(p.B, p.Ldb, pc, kc, jc, nc, g.NR, buffers.B);
                else PackRowPanels(p.B, p.Ldb, jc, nc, pc, kc, g.NR, buffers.B);

                for (int ic = m0; ic < m1; ic += g.MC)
                {
                    int mc = Math.Min(g.MC, m1 - ic);
                    PackRowPanels(p.A, p.Lda, ic, mc, pc, kc, g.MR, buffers.A);
                    MacroKernel(kernel, g, buffers.A, mc, buffers.B, nc, kc, p.C + (long)ic * p.Ldc + jc, p.Ldc,
                        accumulate || p.Bias == null ? null : p.Bias + jc, accumulate, bPanelsOuter: false);
                }
            }
        }
    }

    /// <summary>
    /// All MR×NR tiles of an mc×nc block of C from packed A (mc rows) and packed B (nc columns) over one K block.
    /// With <paramref name="bPanelsOuter"/> each B panel is loaded once and reused by every A panel (B larger than
    /// L2, A small); otherwise each A panel stays in L1 while the B panels stream from L2.
    /// </summary>
    private static void MacroKernel(GemmKernel kernel, GemmGeometry g, float* packedA, int mc, float* packedB, int nc, int kc,
        float* c, long ldc, float* bias, bool accumulate, bool bPanelsOuter)
    {
        float* edgeTile = stackalloc float[MaxMR * MaxNR];
        int mPanels = (mc + g.MR - 1) / g.MR, nPanels = (nc + g.NR - 1) / g.NR;
        int outerCount = bPanelsOuter ? nPanels : mPanels, innerCount = bPanelsOuter ? mPanels : nPanels;
        for (int outer = 0; outer < outerCount; outer++)
            for (int inner = 0; inner < innerCount; inner++)
            {
                int ir = (bPanelsOuter ? inner : outer) * g.MR, jr = (bPanelsOuter ? outer : inner) * g.NR;
                int mr = Math.Min(g.MR, mc - ir), nr = Math.Min(g.NR, nc - jr);
                float* pa = packedA + (long)ir * kc;
                float* pb = packedB + (long)jr * kc;
                float* cTile = c + (long)ir * ldc + jr;
                float* biasTile = bias == null ? null : bias + jr;
                if (mr == g.MR && nr == g.NR)
                {
                    RunKernel(kernel, pa, pb, kc, cTile, ldc, biasTile, accumulate);
                    continue;
                }
                // A ragged edge: compute the full tile aside (padding is zero) and keep the valid part.
                RunKernel(kernel, pa, pb, kc, edgeTile, g.NR, null, accumulate: false);
                for (int r = 0; r < mr; r++)
                {
                    float* src = edgeTile + r * g.NR;
                    float* dst = cTile + r * ldc;
                    for (int j = 0; j < nr; j++)
                        dst[j] = accumulate ? dst[j] + src[j] : src[j] + (biasTile == null ? 0f : biasTile[j]);
                }
            }
    }

    /// <summary>Floats that <see cref="PackWholeB"/> writes: every K block of all N columns, padded to NR.</summary>
    internal static long PackedWholeBFloats(int n, int k, GemmKernel kernel)
    {
        GemmGeometry g = GemmGeometry.For(kernel);
        return (long)((n + g.NR - 1) / g.NR * g.NR) * k;
    }

    /// <summary>
    /// Packs all of B once (K block after K block, NR panels within each) for products that reuse it across many
    /// A blocks on one thread, as attention does with a head's keys and values for every block of queries.
    /// </summary>
    internal static void PackWholeB(float* b, long ldb, bool bIsKByN, int n, int k, GemmKernel kernel, float* destination)
    {
        GemmGeometry g = GemmGeometry.For(kernel);
        long paddedN = (n + g.NR - 1) / g.NR * g.NR;
        for (int pc = 0; pc < k; pc += g.KC)
        {
            int kc = Math.Min(g.KC, k - pc);
            float* block = destination + paddedN * pc;
            if (bIsKByN) PackColumnPanels(b, ldb, pc, kc, 0, n, g.NR, block);
            else PackRowPanels(b, ldb, 0, n, pc, kc, g.NR, block);
        }
    }

    /// <summary>C[M,N] = A·op(B) on the calling thread, with B from <see cref="PackWholeB"/>.</summary>
    internal static void MultiplyPrepacked(float* a, long lda, int m, float* packedB, int n, int k, float* c, long ldc, GemmKernel kernel)
    {
        GemmGeometry g = GemmGeometry.For(kernel);
        if (k == 0)
        {
            FillWithBias(new GemmProblem(m, n, k, a, lda, null, 0, false, c, ldc, null), 0, m, 0, n);
            return;
        }
        PackBuffers buffers = PackBuffers.ForCurrentThread(g);
        long paddedN = (n + g.NR - 1) / g.NR * g.NR;
        // Panels of B bigger than L2 are walked once each, with the few A panels reused from L1.
        bool bPanelsOuter = paddedN * Math.Min(k, g.KC) * sizeof(float) > 512 * 1024;
        for (int pc = 0; pc < k; pc += g.KC)
        {
            int kc = Math.Min(g.KC, k - pc);
            for (int ic = 0; ic < m; ic += g.MC)
            {
                int mc = Math.Min(g.MC, m - ic);
                PackRowPanels(a, lda, ic, mc, pc, kc, g.MR, buffers.A);
                MacroKernel(kernel, g, buffers.A, mc, packedB + paddedN * pc, n, kc, c + (long)ic * ldc, ldc, null, pc > 0, bPanelsOuter);
            }
        }
    }

    private static void FillWithBias(in GemmProblem p, int m0, int m1, int n0, int n1)
    {
        for (int i = m0; i < m1; i++)
        {
            var row = new Span<float>(p.C + (long)i * p.Ldc + n0, n1 - n0);
            if (p.Bias == null) row.Clear();
            else new ReadOnlySpan<float>(p.Bias + n0, n1 - n0).CopyTo(row);
        }
    }

    /// <summary>
    /// Packs rows [start, start+count) × columns [k0, k0+kc) of a row-major matrix as panels of
    /// <paramref name="width"/> rows, each stored k-major (width values per k), the last panel zero-padded.
    /// </summary>
    private static void PackRowPanels(float* src, long ld, int start, int count, int k0, int kc, int width, float* dst)
    {
        for (int panel = 0; panel < count; panel += width)
        {
            float* panelDst = dst + (long)panel * kc;
            int rows = Math.Min(width, count - panel);
            for (int r = 0; r < rows; r++)
            {
                float* row = src + (long)(start + panel + r) * ld + k0;
                float* d = panelDst + r;
                int p = 0;
                for (; p + 4 <= kc; p += 4)
                {
                    d[0] = row[p];
                    d[width] = row[p + 1];
                    d[2 * width] = row[p + 2];
                    d[3 * width] = row[p + 3];
                    d += 4 * width;
                }
                for (; p < kc; p++, d += width) *d = row[p];
            }
            for (int r = rows; r < width; r++)
                for (int p = 0; p < kc; p++) panelDst[(long)p * width + r] = 0f;
        }
    }

    /// <summary>Packs rows [k0, k0+kc) × columns [start, start+count) of a [K, N] matrix as NR-wide k-major panels.</summary>
    private static void PackColumnPanels(float* src, long ld, int k0, int kc, int start, int count, int width, float* dst)
    {
        for (int panel = 0; panel < count; panel += width)
        {
            float* panelDst = dst + (long)panel * kc;
            int cols = Math.Min(width, count - panel);
            for (int p = 0; p < kc; p++)
            {
                float* row = src + (long)(k0 + p) * ld + start + panel;
                float* d = panelDst + (long)p * width;
                Buffer.MemoryCopy(row, d, cols * sizeof(float), cols * sizeof(float));
                for (int j = cols; j < width; j++) d[j] = 0f;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RunKernel(GemmKernel kernel, float* pa, float* pb, int kc, float* c, long ldc, float* bias, bool accumulate)
    {
        switch (kernel)
        {
            case GemmKernel.Avx512: Kernel12x32Avx512(pa, pb, kc, c, ldc, bias, accumulate); break;
            case GemmKernel.Avx2: Kernel6x16Avx2(pa, pb, kc, c, ldc, bias, accumulate); break;
            default: Kernel4x8Portable(pa, pb, kc, c, ldc, bias, accumulate); break;
        }
    }

    /// <summary>
    /// C[12×32] (=|+=) Ã·B̃ over kc: 24 zmm accumulators, two B vectors and one broadcast stay in the 32 registers,
    /// so each k step is 24 FMAs for 2 vector loads and 12 broadcasts.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel12x32Avx512(float* pa, float* pb, int kc, float* c, long ldc, float* bias, bool accumulate)
    {
        // The C tile is touched once per call, after kc steps: start its 24 cache-line fetches now so that rows
        // far apart (large ldc) arrive during the arithmetic instead of stalling the stores.
        for (int r = 0; r < 12; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + 16);
        }
        Vector512<float> c0a = default, c0b = default;
        Vector512<float> c1a = default, c1b = default;
        Vector512<float> c2a = default, c2b = default;
        Vector512<float> c3a = default, c3b = default;
        Vector512<float> c4a = default, c4b = default;
        Vector512<float> c5a = default, c5b = default;
        Vector512<float> c6a = default, c6b = default;
        Vector512<float> c7a = default, c7b = default;
        Vector512<float> c8a = default, c8b = default;
        Vector512<float> c9a = default, c9b = default;
        Vector512<float> c10a = default, c10b = default;
        Vector512<float> c11a = default, c11b = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(pb), b1 = Vector512.Load(pb + 16), a;
            a = Vector512.Create(pa[0]); c0a = Avx512F.FusedMultiplyAdd(a, b0, c0a); c0b = Avx512F.FusedMultiplyAdd(a, b1, c0b);
            a = Vector512.Create(pa[1]); c1a = Avx512F.FusedMultiplyAdd(a, b0, c1a); c1b = Avx512F.FusedMultiplyAdd(a, b1, c1b);
            a = Vector512.Create(pa[2]); c2a = Avx512F.FusedMultiplyAdd(a, b0, c2a); c2b = Avx512F.FusedMultiplyAdd(a, b1, c2b);
            a = Vector512.Create(pa[3]); c3a = Avx512F.FusedMultiplyAdd(a, b0, c3a); c3b = Avx512F.FusedMultiplyAdd(a, b1, c3b);
            a = Vector512.Create(pa[4]); c4a = Avx512F.FusedMultiplyAdd(a, b0, c4a); c4b = Avx512F.FusedMultiplyAdd(a, b1, c4b);
            a = Vector512.Create(pa[5]); c5a = Avx512F.FusedMultiplyAdd(a, b0, c5a); c5b = Avx512F.FusedMultiplyAdd(a, b1, c5b);
            a = Vector512.Create(pa[6]); c6a = Avx512F.FusedMultiplyAdd(a, b0, c6a); c6b = Avx512F.FusedMultiplyAdd(a, b1, c6b);
            a = Vector512.Create(pa[7]); c7a = Avx512F.FusedMultiplyAdd(a, b0, c7a); c7b = Avx512F.FusedMultiplyAdd(a, b1, c7b);
            a = Vector512.Create(pa[8]); c8a = Avx512F.FusedMultiplyAdd(a, b0, c8a); c8b = Avx512F.FusedMultiplyAdd(a, b1, c8b);
            a = Vector512.Create(pa[9]); c9a = Avx512F.FusedMultiplyAdd(a, b0, c9a); c9b = Avx512F.FusedMultiplyAdd(a, b1, c9b);
            a = Vector512.Create(pa[10]); c10a = Avx512F.FusedMultiplyAdd(a, b0, c10a); c10b = Avx512F.FusedMultiplyAdd(a, b1, c10b);
            a = Vector512.Create(pa[11]); c11a = Avx512F.FusedMultiplyAdd(a, b0, c11a); c11b = Avx512F.FusedMultiplyAdd(a, b1, c11b);
            pa += 12;
            pb += 32;
        }
        Vector512<float> bias0 = bias == null ? default : Vector512.Load(bias);
        Vector512<float> bias1 = bias == null ? default : Vector512.Load(bias + 16);
        StoreRow512(c + 0 * ldc, c0a, c0b, bias0, bias1, accumulate);
        StoreRow512(c + 1 * ldc, c1a, c1b, bias0, bias1, accumulate);
        StoreRow512(c + 2 * ldc, c2a, c2b, bias0, bias1, accumulate);
        StoreRow512(c + 3 * ldc, c3a, c3b, bias0, bias1, accumulate);
        StoreRow512(c + 4 * ldc, c4a, c4b, bias0, bias1, accumulate);
        StoreRow512(c + 5 * ldc, c5a, c5b, bias0, bias1, accumulate);
        StoreRow512(c + 6 * ldc, c6a, c6b, bias0, bias1, accumulate);
        StoreRow512(c + 7 * ldc, c7a, c7b, bias0, bias1, accumulate);
        StoreRow512(c + 8 * ldc, c8a, c8b, bias0, bias1, accumulate);
        StoreRow512(c + 9 * ldc, c9a, c9b, bias0, bias1, accumulate);
        StoreRow512(c + 10 * ldc, c10a, c10b, bias0, bias1, accumulate);
        StoreRow512(c + 11 * ldc, c11a, c11b, bias0, bias1, accumulate);
    }

    /// <summary>C[6×16] (=|+=) Ã·B̃ over kc with AVX2 FMA: 12 ymm accumulators of the 16 registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x16Avx2(float* pa, float* pb, int kc, float* c, long ldc, float* bias, bool accumulate)
    {
        for (int r = 0; r < 6; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + 8);
        }
        Vector256<float> c0a = default, c0b = default;
        Vector256<float> c1a = default, c1b = default;
        Vector256<float> c2a = default, c2b = default;
        Vector256<float> c3a = default, c3b = default;
        Vector256<float> c4a = default, c4b = default;
        Vector256<float> c5a = default, c5b = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(pb), b1 = Vector256.Load(pb + 8), a;
            a = Vector256.Create(pa[0]); c0a = Fma.MultiplyAdd(a, b0, c0a); c0b = Fma.MultiplyAdd(a, b1, c0b);
            a = Vector256.Create(pa[1]); c1a = Fma.MultiplyAdd(a, b0, c1a); c1b = Fma.MultiplyAdd(a, b1, c1b);
            a = Vector256.Create(pa[2]); c2a = Fma.MultiplyAdd(a, b0, c2a); c2b = Fma.MultiplyAdd(a, b1, c2b);
            a = Vector256.Create(pa[3]); c3a = Fma.MultiplyAdd(a, b0, c3a); c3b = Fma.MultiplyAdd(a, b1, c3b);
            a = Vector256.Create(pa[4]); c4a = Fma.MultiplyAdd(a, b0, c4a); c4b = Fma.MultiplyAdd(a, b1, c4b);
            a = Vector256.Create(pa[5]); c5a = Fma.MultiplyAdd(a, b0, c5a); c5b = Fma.MultiplyAdd(a, b1, c5b);
            pa += 6;
            pb += 16;
        }
        Vector256<float> bias0 = bias == null ? default : Vector256.Load(bias);
        Vector256<float> bias1 = bias == null ? default : Vector256.Load(bias + 8);
        StoreRow256(c + 0 * ldc, c0a, c0b, bias0, bias1, accumulate);
        StoreRow256(c + 1 * ldc, c1a, c1b, bias0, bias1, accumulate);
        StoreRow256(c + 2 * ldc, c2a, c2b, bias0, bias1, accumulate);
        StoreRow256(c + 3 * ldc, c3a, c3b, bias0, bias1, accumulate);
        StoreRow256(c + 4 * ldc, c4a, c4b, bias0, bias1, accumulate);
        StoreRow256(c + 5 * ldc, c5a, c5b, bias0, bias1, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow512(float* row, Vector512<float> left, Vector512<float> right,
        Vector512<float> biasLeft, Vector512<float> biasRight, bool accumulate)
    {
        if (accumulate)
        {
            Vector512.Store(Vector512.Load(row) + left, row);
            Vector512.Store(Vector512.Load(row + 16) + right, row + 16);
        }
        else
        {
            Vector512.Store(left + biasLeft, row);
            Vector512.Store(right + biasRight, row + 16);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow256(float* row, Vector256<float> left, Vector256<float> right,
        Vector256<float> biasLeft, Vector256<float> biasRight, bool accumulate)
    {
        if (accumulate)
        {
            Vector256.Store(Vector256.Load(row) + left, row);
            Vector256.Store(Vector256.Load(row + 8) + right, row + 8);
        }
        else
        {
            Vector256.Store(left + biasLeft, row);
            Vector256.Store(right + biasRight, row + 8);
        }
    }

    /// <summary>The scalar 4×8 tile for machines without AVX2/FMA: correct everywhere, fast nowhere.</summary>
    private static void Kernel4x8Portable(float* pa, float* pb, int kc, float* c, long ldc, float* bias, bool accumulate)
    {
        float* acc = stackalloc float[4 * 8];
        new Span<float>(acc, 32).Clear();
        for (int p = 0; p < kc; p++, pa += 4, pb += 8)
            for (int r = 0; r < 4; r++)
            {
                float a = pa[r];
                for (int j = 0; j < 8; j++) acc[r * 8 + j] += a * pb[j];
            }
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 8; j++)
            {
                float* dst = c + r * ldc + j;
                *dst = accumulate ? *dst + acc[r * 8 + j] : acc[r * 8 + j] + (bias == null ? 0f : bias[j]);
            }
    }

    /// <summary>
    /// Products of a few rows (modulation, a single query): every element of B is used M times at most, so packing
    /// would triple the memory traffic of a memory-bound product. Columns [n0, n1) of C.
    /// </summary>
    private static void MultiplySmallM(in GemmProblem p, int n0, int n1)
    {
        if (p.BIsKByN)
        {
            for (int i = 0; i < p.M; i++)
            {
                float* cRow = p.C + (long)i * p.Ldc;
                float* aRow = p.A + (long)i * p.Lda;
                var cSpan = new Span<float>(cRow + n0, n1 - n0);
                if (p.Bias == null) cSpan.Clear();
                else new ReadOnlySpan<float>(p.Bias + n0, n1 - n0).CopyTo(cSpan);
                for (int kk = 0; kk < p.K; kk++)
                    CpuVector.MultiplyAdd(cRow + n0, p.B + (long)kk * p.Ldb + n0, aRow[kk], n1 - n0);
            }
            return;
        }

        int n = n0;
        for (; n + 4 <= n1; n += 4)
        {
            float* b0 = p.B + (long)n * p.Ldb;
            for (int i = 0; i < p.M; i += 2)
            {
                // Two rows of A per pass over four rows of B: eight independent dot products hide FMA latency.
                int second = Math.Min(i + 1, p.M - 1);
                CpuVector.Dot2x4(p.A + (long)i * p.Lda, p.A + (long)second * p.Lda, b0, p.Ldb, p.K, out Vector128<float> dots0, out Vector128<float> dots1);
                StoreDots(p, i, n, dots0);
                if (second != i) StoreDots(p, second, n, dots1);
            }
        }
        for (; n < n1; n++)
        {
            float* bRow = p.B + (long)n * p.Ldb;
            for (int i = 0; i < p.M; i++)
                p.C[(long)i * p.Ldc + n] = CpuVector.Dot(p.A + (long)i * p.Lda, bRow, p.K) + (p.Bias == null ? 0f : p.Bias[n]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreDots(in GemmProblem p, int row, int n, Vector128<float> dots)
    {
        if (p.Bias != null) dots += Vector128.Load(p.Bias + n);
        Vector128.Store(dots, p.C + (long)row * p.Ldc + n);
    }
}

/// <summary>Block sizes of one micro-kernel: MR×NR registers, KC so an NR panel stays in L1/L2, MC and NC for L2.</summary>
internal readonly record struct GemmGeometry(int MR, int NR, int KC, int MC, int NC)
{
    private static readonly GemmGeometry Avx512 = new(12, 32, 256, 192, 512);
    private static readonly GemmGeometry Avx2 = new(6, 16, 256, 96, 512);
    private static readonly GemmGeometry Portable = new(4, 8, 256, 64, 256);

    public static GemmGeometry For(GemmKernel kernel) => kernel switch
    {
        GemmKernel.Avx512 => Avx512,
        GemmKernel.Avx2 => Avx2,
        _ => Portable,
    };

    public long PackedAFloats => (long)MC * KC;
    public long PackedBFloats => (long)NC * KC;
}

/// <summary>
/// Each thread's packing space, allocated once and kept for the thread's life: the pool threads that run GEMMs
/// are few and long-lived, and allocating per product would cost more than small products themselves.
/// </summary>
internal sealed unsafe class PackBuffers
{
    [ThreadStatic] private static PackBuffers? t_current;

    private PackBuffers(long aFloats, long bFloats)
    {
        ACapacity = aFloats;
        BCapacity = bFloats;
        A = (float*)NativeMemory.AlignedAlloc((nuint)(aFloats * sizeof(float)), 64);
        B = (float*)NativeMemory.AlignedAlloc((nuint)(bFloats * sizeof(float)), 64);
    }

    public float* A { get; }
    public float* B { get; }
    private long ACapacity { get; }
    private long BCapacity { get; }

    public static PackBuffers ForCurrentThread(GemmGeometry g)
    {
        PackBuffers? current = t_current;
        if (current is not null && current.ACapacity >= g.PackedAFloats && current.BCapacity >= g.PackedBFloats) return current;
        long a = Math.Max(g.PackedAFloats, current?.ACapacity ?? 0);
        long b = Math.Max(g.PackedBFloats, current?.BCapacity ?? 0);
        current?.Free();
        return t_current = new PackBuffers(a, b);
    }

    private void Free()
    {
        NativeMemory.AlignedFree(A);
        NativeMemory.AlignedFree(B);
    }
}
