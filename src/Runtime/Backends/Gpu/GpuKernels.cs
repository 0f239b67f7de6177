using System.Reflection;
using ILGPU;
using ILGPU.Runtime;
using InFluxEdit.Runtime.Backends.Gpu.Kernels;

namespace InFluxEdit.Runtime.Backends.Gpu;

using Unary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>;
using Binary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>;
using Ternary = Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>;

/// <summary>
/// The kernels of one accelerator as typed launch delegates, each compiled on first use: a backend compiles only
/// what a model launches, and a kernel that fails to compile surfaces at its own op. Element-wise kernels are
/// implicitly grouped (ILGPU picks the group size); kernels with shared memory are explicitly grouped and take a
/// <see cref="KernelConfig"/>. All launch on the accelerator's default stream.
/// </summary>
internal sealed class GpuKernels
{
    private readonly Lazy<Unary> copy, silu, geluTanh;
    private readonly Lazy<Binary> add;
    private readonly Lazy<Action<Index1D, int, float, float, StridedMatrix, Elements, StridedMatrix, Elements>> scaleShift;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements>> transpose;
    private readonly Lazy<Ternary> modulate, gatedResidual;
    private readonly Lazy<Action<Index1D, int, StridedMatrix, Elements, ArrayView<float>>> addBiasToRows;
    private readonly Lazy<Action<Index1D, int, ArrayView<ushort>, StridedMatrix, Elements>> roundToBFloat16;
    private readonly Lazy<Action<Index1D, ArrayView<float>, ArrayView<ushort>>> widenBFloat16, widenFloat16;
    private readonly Lazy<Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements>> layerNorm;
    private readonly Lazy<Action<KernelConfig, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>> rmsNorm;
    private readonly Lazy<Action<Index1D, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>> timestep;
    private readonly Lazy<Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<int>>> rope;
    private readonly Lazy<Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>> applyRope;
    private readonly Lazy<Action<KernelConfig, int, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ScoreMask>> attention;
    private readonly Lazy<Action<KernelConfig, int, ArrayView<float>, Elements>> softmaxRows;
    private readonly Lazy<Action<KernelConfig, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int>> linearFloat32;
    private readonly Lazy<Action<KernelConfig, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>, ArrayView<float>, int>> linearBFloat16, linearFloat16;

    public GpuKernels(Accelerator accelerator)
    {
        Lazy<T> Auto<T>(Func<T> load) => new(load, LazyThreadSafetyMode.ExecutionAndPublication);
        var a = accelerator;
        copy = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.Copy));
        silu = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.Silu));
        geluTanh = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.GeluTanh));
        scaleShift = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, float, float, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.ScaleShift));
        transpose = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.Transpose));
        add = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.Add));
        modulate = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.Modulate));
        gatedResidual = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(ElementwiseKernels.GatedResidual));
        addBiasToRows = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, ArrayView<float>>(ElementwiseKernels.AddBiasToRows));
        roundToBFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, ArrayView<ushort>, StridedMatrix, Elements>(ElementwiseKernels.RoundToBFloat16));
        widenBFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(ElementwiseKernels.WidenBFloat16));
        widenFloat16 = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(ElementwiseKernels.WidenFloat16));
        layerNorm = Auto(() => a.LoadStreamKernel<int, float, StridedMatrix, Elements, StridedMatrix, Elements>(RowNormKernels.LayerNorm));
        rmsNorm = Auto(() => a.LoadStreamKernel<int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(RowNormKernels.RmsNorm));
        timestep = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>>(EmbeddingKernels.Timestep));
        rope = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<int>>(EmbeddingKernels.Rope));
        applyRope = Auto(() => a.LoadAutoGroupedStreamKernel<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements>(EmbeddingKernels.ApplyRope));
        attention = Auto(() => a.LoadStreamKernel<int, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ScoreMask>(AttentionKernels.Attention));
        softmaxRows = Auto(() => a.LoadStreamKernel<int, ArrayView<float>, Elements>(AttentionKernels.SoftmaxRows));
        linearFloat32 = Auto(() => a.LoadStreamKernel<int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int>(GemmKernels.LinearFloat32));
        linearBFloat16 = Auto(() => a.LoadStreamKernel<int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>, ArrayView<float>, int>(GemmKernels.LinearBFloat16));
        linearFloat16 = Auto(() => a.LoadStreamKernel<int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>, ArrayView<float>, int>(GemmKernels.LinearFloat16));
    }

    public Unary Copy => copy.Value;
    public Unary Silu => silu.Value;
    public Unary GeluTanh => geluTanh.Value;
    public Binary Add => add.Value;
    public Action<Index1D, int, float, float, StridedMatrix, Elements, StridedMatrix, Elements> ScaleShift => scaleShift.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements> Transpose => transpose.Value;
    public Ternary Modulate => modulate.Value;
    public Ternary GatedResidual => gatedResidual.Value;
    public Action<Index1D, int, StridedMatrix, Elements, ArrayView<float>> AddBiasToRows => addBiasToRows.Value;
    public Action<Index1D, int, ArrayView<ushort>, StridedMatrix, Elements> RoundToBFloat16 => roundToBFloat16.Value;
    public Action<Index1D, ArrayView<float>, ArrayView<ushort>> WidenBFloat16 => widenBFloat16.Value;
    public Action<Index1D, ArrayView<float>, ArrayView<ushort>> WidenFloat16 => widenFloat16.Value;
    public Action<KernelConfig, int, float, StridedMatrix, Elements, StridedMatrix, Elements> LayerNorm => layerNorm.Value;
    public Action<KernelConfig, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>> RmsNorm => rmsNorm.Value;
    public Action<Index1D, int, float, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>> Timestep => timestep.Value;
    public Action<Index1D, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<double>, ArrayView<int>> Rope => rope.Value;
    public Action<Index1D, int, int, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements> ApplyRope => applyRope.Value;
    public Action<KernelConfig, int, int, int, float, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, StridedMatrix, Elements, ScoreMask> Attention => attention.Value;
    public Action<KernelConfig, int, ArrayView<float>, Elements> SoftmaxRows => softmaxRows.Value;
    public Action<KernelConfig, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<float>, ArrayView<float>, int> LinearFloat32 => linearFloat32.Value;
    public Action<KernelConfig, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>, ArrayView<float>, int> LinearBFloat16 => linearBFloat16.Value;
    public Action<KernelConfig, int, int, int, StridedMatrix, Elements, StridedMatrix, Elements, ArrayView<ushort>, ArrayView<float>, int> LinearFloat16 => linearFloat16.Value;
}

/// <summary>Every kernel entry point by family, for compile-only checks (PTX without a GPU).</summary>
public static class GpuKernelCatalog
{
    public sealed record Entry(string Family, MethodInfo Method, bool ExplicitlyGrouped);

    public static IReadOnlyList<Entry> All { get; } = Build();

    private static List<Entry> Build()
    {
        var entries = new List<Entry>();
        void Add(string family, Type type, bool explicitlyGrouped)
        {
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
                if (method.ReturnType == typeof(void))
                    entries.Add(new Entry(family, method, explicitlyGrouped));
        }
        Add("elementwise", typeof(ElementwiseKernels), explicitlyGrouped: false);
        Add("embedding", typeof(EmbeddingKernels), explicitlyGrouped: false);
        Add("rownorm", typeof(RowNormKernels), explicitlyGrouped: true);
        Add("gemm", typeof(GemmKernels), explicitlyGrouped: true);
        Add("attention", typeof(AttentionKernels), explicitlyGrouped: true);
        Add("flash", typeof(FlashAttentionKernels), explicitlyGrouped: true);
        Add("flashrows", typeof(FlashAttentionRowKernels), explicitlyGrouped: false);
        Add("image", typeof(ImageKernels), explicitlyGrouped: false);
        Add("groupnorm", typeof(GroupNormKernels), explicitlyGrouped: true);
        Add("text", typeof(TextKernels), explicitlyGrouped: false);
        Add("textnorm", typeof(TextRowKernels), explicitlyGrouped: true);
        Add("dequantize", typeof(DequantizeKernels), explicitlyGrouped: false);
        foreach (var method in typeof(BackwardKernels).GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
            if (method.ReturnType == typeof(void))
                // Element-wise backward kernels take an Index1D; the row, reduction and GEMM kernels are explicitly grouped.
                entries.Add(new Entry("backward", method, method.GetParameters().FirstOrDefault()?.ParameterType != typeof(Index1D)));
        return entries;
    }
}
