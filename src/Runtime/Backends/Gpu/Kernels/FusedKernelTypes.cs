using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>One view a fused kernel reads or writes, addressed by the group's flat rows (stride 0 broadcasts).</summary>
public readonly struct FusedOperand
{
    public readonly StridedMatrix Layout;
    public readonly Elements Data;

    public FusedOperand(StridedMatrix layout, Elements data)
    {
        Layout = layout;
        Data = data;
    }

    public float At(long flatRow, int col) => Data[Layout.IndexOf(flatRow, col)];

    public void Set(long flatRow, int col, float value) => Data[Layout.IndexOf(flatRow, col)] = value;
}

/// <summary>
/// The one parameter of every kernel the generator fuses (see <see cref="FusedKernelLauncher"/>): the width of the
/// column segment one thread group reduces over (a row for LayerNorm, a head for RMSNorm), how many segments a row
/// has, and up to <see cref="MaxOperands"/> operands in the order the generated kernel's comment lists them. A single
/// signature lets one launcher load any generated kernel without a delegate type per operand count.
/// </summary>
public readonly struct FusedLaunch
{
    public const int MaxOperands = 8;

    public readonly int Segment;
    public readonly int SegmentsPerRow;
    public readonly FusedOperand A0, A1, A2, A3, A4, A5, A6, A7;

    public FusedLaunch(int segment, int segmentsPerRow, FusedOperand[] operands)
    {
        Segment = segment;
        SegmentsPerRow = segmentsPerRow;
        FusedOperand Slot(int i) => i < operands.Length ? operands[i] : default;
        A0 = Slot(0); A1 = Slot(1); A2 = Slot(2); A3 = Slot(3);
        A4 = Slot(4); A5 = Slot(5); A6 = Slot(6); A7 = Slot(7);
    }
}

/// <summary>The device functions generated fused kernels call, shared with the unfused kernels so both round alike.</summary>
public static class FusedMath
{
    public const int MaxGroupSize = RowNormKernels.MaxGroupSize;

    /// <summary>Sum of one value per thread of a power-of-two group, returned to every thread.</summary>
    public static float GroupSum(ArrayView<float> partials, float value) => RowNormKernels.GroupSum(partials, value);

    public static float Sqrt(float value) => XMath.Sqrt(value);
}
