using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Quantization;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// Products with a weight held quantized (<see cref="CpuQuantizedTensor"/>): the output columns are cut into panels, and
/// each thread decodes its panel of the weight into its own float32 scratch and runs the packed GEMM on it. The panel is
/// a range of the weight's rows (y = x·Wᵀ, whose output columns are W's rows) or of its block columns (dx = dy·W, whose
/// output columns are W's columns). Each output element is computed exactly as the float GEMM computes it over the
/// decoded weight (the same K order, the same micro-kernel), so the results equal the decoded weight's bit for bit.
/// </summary>
internal static unsafe class CpuQuantizedGemm
{
    /// <summary>
    /// Float32 values of one panel: 4 MiB per thread, small beside the weight, and wide enough that repacking the
    /// activations for each panel (as the float GEMM does per NC columns anyway) costs little.
    /// </summary>
    private const long PanelFloats = 1 << 20;

    /// <summary>C[M, out] = alpha·A[M, in]·Wᵀ + beta·C, or + bias with alpha 1 and beta 0 (a Linear).</summary>
    public static void MultiplyTransposed(int m, float* a, long lda, CpuQuantizedTensor w, float* c, long ldc, float* bias, float alpha, float beta)
    {
        GemmKernel kernel = CpuGemm.BestKernel;
        int k = w.InFeatures;
        // Whole NR panels keep every panel's tiles where the float GEMM's are, so the ragged last tile is the same one.
        int rows = PanelWidth(k, GemmGeometry.For(kernel).NR, w.OutFeatures);
        ForPanels(w.OutFeatures, rows, m, k, (n0, count, scratch) =>
        {
            w.DecodeRows(n0, count, new Span<float>(scratch, count * k));
            if (bias != null || (alpha == 1f && beta == 0f))
                CpuGemm.MultiplySerial(new GemmProblem(m, count, k, a, lda, scratch, k, bIsKByN: false, c + n0, ldc, bias == null ? null : bias + n0), kernel);
            else
                CpuGemm.MultiplyGeneralBlocked(new GeneralGemmProblem(m, count, k, a, lda, false, scratch, k, true, c + n0, ldc, alpha, beta), kernel, 0, m, 0, count);
        });
    }

    /// <summary>C[M, in] = alpha·A[M, out]·W + beta·C: the input gradient of a linear layer.</summary>
    public static void Multiply(int m, float* a, long lda, CpuQuantizedTensor w, float* c, long ldc, float alpha, float beta)
    {
        GemmKernel kernel = CpuGemm.BestKernel;
        int k = w.OutFeatures;
        int align = Math.Max(w.Format.BlockElements(), GemmGeometry.For(kernel).NR);
        int width = PanelWidth(k, align, w.InFeatures);
        ForPanels(w.InFeatures, width, m, k, (n0, count, scratch) =>
        {
            w.DecodeColumns(n0, count, new Span<float>(scratch, count * k));
            CpuGemm.MultiplyGeneralBlocked(new GeneralGemmProblem(m, count, k, a, lda, false, scratch, count, false, c + n0, ldc, alpha, beta),
                kernel, 0, m, 0, count);
        });
    }

    /// <summary>How many output columns a panel takes: a multiple of <paramref name="align"/> near <see cref="PanelFloats"/>/K.</summary>
    private static int PanelWidth(int k, int align, int columns)
    {
        long fitting = PanelFloats / Math.Max(1, k) / align * align;
        return (int)Math.Min(Math.Max(align, fitting), Math.Max(align, columns));
    }

    private delegate void PanelBody(int n0, int count, float* scratch);

    /// <summary>Runs body over the panels of [0, columns), each thread a contiguous share with its own scratch.</summary>
    private static void ForPanels(int columns, int panel, int m, int k, PanelBody body)
    {
        if (columns == 0 || m == 0) return;
        int panels = (columns + panel - 1) / panel;
        bool parallel = 2L * m * columns * Math.Max(1, k) >= 2_000_000;
        int tasks = parallel ? Math.Min(panels, CpuParallel.ThreadCount) : 1;
        CpuParallel.ForTasks(tasks, t =>
        {
            int first = (int)((long)panels * t / tasks), last = (int)((long)panels * (t + 1) / tasks);
            float* scratch = PanelScratch.ForCurrentThread((long)panel * k);
            for (int p = first; p < last; p++)
            {
                int n0 = p * panel;
                body(n0, Math.Min(panel, columns - n0), scratch);
            }
        });
    }

    /// <summary>Each thread's panel buffer, grown to the largest panel it has decoded and kept for the thread's life (as the GEMM's pack buffers).</summary>
    private sealed class PanelScratch
    {
        [ThreadStatic] private static PanelScratch? t_current;

        private float* _pointer;
        private long _capacity;

        public static float* ForCurrentThread(long floats)
        {
            var scratch = t_current ??= new PanelScratch();
            if (scratch._capacity < floats)
            {
                if (scratch._pointer != null) NativeMemory.AlignedFree(scratch._pointer);
                scratch._pointer = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
                scratch._capacity = floats;
            }
            return scratch._pointer;
        }

        ~PanelScratch()
        {
            if (_pointer != null) NativeMemory.AlignedFree(_pointer);
        }
    }
}
