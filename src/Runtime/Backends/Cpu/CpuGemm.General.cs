using System.Runtime.Intrinsics;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// C[M,N] = alpha·op(A)·op(B) + beta·C, row-major with row strides in elements. op(A) is A when A is stored [M, K]
/// and Aᵀ when it is stored [K, M] (<see cref="ATransposed"/>); op(B) is B when stored [K, N] and Bᵀ when stored
/// [N, K] (<see cref="BTransposed"/>). With beta = 0, C is not read (NaN in C does not survive).
/// </summary>
internal readonly unsafe struct GeneralGemmProblem
{
    public GeneralGemmProblem(int m, int n, int k, float* a, long lda, bool aTransposed, float* b, long ldb, bool bTransposed,
        float* c, long ldc, float alpha, float beta)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(m), $"negative GEMM size {m}×{n}×{k}");
        M = m; N = n; K = k; A = a; Lda = lda; ATransposed = aTransposed; B = b; Ldb = ldb; BTransposed = bTransposed;
        C = c; Ldc = ldc; Alpha = alpha; Beta = beta;
    }

    public readonly int M, N, K;
    public readonly float* A, B, C;
    public readonly long Lda, Ldb, Ldc;
    public readonly bool ATransposed, BTransposed;
    public readonly float Alpha, Beta;
}

public static unsafe partial class CpuGemm
{
    /// <summary>
    /// The general product on all cores, through the same packed micro-kernels as <see cref="Multiply(in GemmProblem, GemmKernel, bool)"/>:
    /// a transpose only changes how a block is packed (row panels from a row-major operand, column panels from a
    /// transposed one), alpha is folded into the packed A panels, and beta into the first store of C.
    /// </summary>
    internal static void MultiplyGeneral(in GeneralGemmProblem problem, GemmKernel kernel, bool parallel)
    {
        GeneralGemmProblem p = problem;
        if (p.M == 0 || p.N == 0) return;
        long flops = 2L * p.M * p.N * Math.Max(1, p.K);
        int threads = parallel && flops >= ParallelFlopThreshold ? CpuParallel.ThreadCount : 1;
        GemmGeometry g = GemmGeometry.For(kernel);
        bool splitColumns = (p.N + g.NR - 1) / g.NR >= (p.M + g.MR - 1) / g.MR;
        int[] ranges = splitColumns ? Cuts(p.N, threads, g.NR) : Cuts(p.M, threads, g.MR);
        CpuParallel.ForTasks(ranges.Length - 1, t =>
        {
            if (splitColumns) MultiplyGeneralBlocked(p, kernel, 0, p.M, ranges[t], ranges[t + 1]);
            else MultiplyGeneralBlocked(p, kernel, ranges[t], ranges[t + 1], 0, p.N);
        });
    }

    /// <summary>The blocked loop nest of the general product over C[m0..m1, n0..n1] on the calling thread.</summary>
    internal static void MultiplyGeneralBlocked(in GeneralGemmProblem p, GemmKernel kernel, int m0, int m1, int n0, int n1)
    {
        if (m0 >= m1 || n0 >= n1) return;
        // BLAS semantics: with alpha = 0 or no reduction, A and B are not read and C only scales.
        if (p.K == 0 || p.Alpha == 0f)
        {
            ScaleBlock(p.C, p.Ldc, m0, m1, n0, n1, p.Beta);
            return;
        }
        // The micro-kernel can only assign or add, so any other beta scales C once up front.
        if (p.Beta != 0f && p.Beta != 1f) ScaleBlock(p.C, p.Ldc, m0, m1, n0, n1, p.Beta);
        bool addToExistingC = p.Beta != 0f;

        GemmGeometry g = GemmGeometry.For(kernel);
        PackBuffers buffers = PackBuffers.ForCurrentThread(g);
        for (int jc = n0; jc < n1; jc += g.NC)
        {
            int nc = Math.Min(g.NC, n1 - jc);
            for (int pc = 0; pc < p.K; pc += g.KC)
            {
                int kc = Math.Min(g.KC, p.K - pc);
                if (p.BTransposed) PackRowPanels(p.B, p.Ldb, jc, nc, pc, kc, g.NR, buffers.B);
                else PackColumnPanels(p.B, p.Ldb, pc, kc, jc, nc, g.NR, buffers.B);

                for (int ic = m0; ic < m1; ic += g.MC)
                {
                    int mc = Math.Min(g.MC, m1 - ic);
                    if (p.ATransposed) PackColumnPanelsByRowGroups(p.A, p.Lda, pc, kc, ic, mc, g.MR, buffers.A);
                    else PackRowPanels(p.A, p.Lda, ic, mc, pc, kc, g.MR, buffers.A);
                    // Scaling the packed panel costs mc·kc multiplies against the product's mc·nc·kc.
                    if (p.Alpha != 1f) CpuVector.Scale(buffers.A, p.Alpha, (mc + g.MR - 1) / g.MR * g.MR * kc);
                    MacroKernel(kernel, g, buffers.A, mc, buffers.B, nc, kc, p.C + (long)ic * p.Ldc + jc, p.Ldc,
                        bias: null, accumulate: pc > 0 || addToExistingC, bPanelsOuter: false);
                }
            }
        }
    }

    /// <summary>
    /// The layout of <see cref="PackColumnPanels"/>, filled a few source rows at a time across all panels. Panels of A
    /// are MR = 12 floats wide, which is not a whole number of cache lines: packing panel after panel would fetch the
    /// lines shared by neighbouring panels twice, kc rows apart, from rows whose large stride maps them to the same
    /// cache sets. A group of rows is read once while it is in L1.
    /// </summary>
    private static void PackColumnPanelsByRowGroups(float* src, long ld, int k0, int kc, int start, int count, int width, float* dst)
    {
        const int RowGroup = 8;
        for (int p0 = 0; p0 < kc; p0 += RowGroup)
        {
            int p1 = Math.Min(kc, p0 + RowGroup);
            for (int panel = 0; panel < count; panel += width)
            {
                int cols = Math.Min(width, count - panel);
                float* panelDst = dst + (long)panel * kc;
                for (int p = p0; p < p1; p++)
                {
                    float* row = src + (long)(k0 + p) * ld + start + panel;
                    float* d = panelDst + (long)p * width;
                    int j = 0;
                    for (; j + 8 <= cols; j += 8) Vector256.Store(Vector256.Load(row + j), d + j);
                    for (; j + 4 <= cols; j += 4) Vector128.Store(Vector128.Load(row + j), d + j);
                    for (; j < cols; j++) d[j] = row[j];
                    for (; j < width; j++) d[j] = 0f;
                }
            }
        }
    }

    /// <summary>C[m0..m1, n0..n1] *= beta, where beta = 0 clears (so NaN or garbage in C does not survive).</summary>
    private static void ScaleBlock(float* c, long ldc, int m0, int m1, int n0, int n1, float beta)
    {
        if (beta == 1f) return;
        for (int i = m0; i < m1; i++)
        {
            float* row = c + (long)i * ldc + n0;
            if (beta == 0f) new Span<float>(row, n1 - n0).Clear();
            else CpuVector.Scale(row, beta, n1 - n0);
        }
    }
}
