using ILGPU;
using ILGPU.Runtime.Cuda;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// The warp-level tensor-core product D = A·B + C of PTX's <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c>:
/// A 16×16 bf16, B 16×8 bf16, C and D 16×8 float32, each spread over the 32 lanes of a warp. With
/// g = lane / 4 and t = lane % 4 (PTX ISA, "matrix fragments for mma.m16n8k16 with floating point type"):
/// <list type="bullet">
/// <item>A: four 32-bit registers of two bf16 each (lower index in the low half). a0 holds A[g][2t..2t+1],
/// a1 A[g+8][2t..2t+1], a2 A[g][2t+8..2t+9], a3 A[g+8][2t+8..2t+9].</item>
/// <item>B: two registers. b0 holds B[2t..2t+1][g], b1 B[2t+8..2t+9][g] (a column's consecutive k).</item>
/// <item>C, D: four floats. c0, c1 are row g, columns 2t and 2t+1; c2, c3 row g+8, the same columns.</item>
/// </list>
/// On CUDA the instruction itself is emitted inline. Elsewhere (ILGPU's CPU accelerator, with warps of 32) an
/// emulation computes the same result from the same per-lane fragments: the lanes publish their registers in a
/// per-warp scratch of <see cref="ExchangeWords"/> words of shared memory and each lane sums its four outputs in
/// float32 (a bf16×bf16 product is exact in float32; the sum runs over k in order after C), so everything around
/// the instruction (tiling, fragment indexing, softmax) runs and is tested without a GPU.
/// </summary>
public static class TensorCoreMma
{
    /// <summary>Shared words the emulation needs per warp: six registers for each of 32 lanes.</summary>
    public const int ExchangeWords = 32 * 6;

    /// <summary>Lanes a warp needs for the fragment layout above.</summary>
    public const int WarpLanes = 32;

    public static void MultiplyAccumulate(ref float d0, ref float d1, ref float d2, ref float d3,
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ArrayView<uint> exchange)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<float> r0 = d0, r1 = d1, r2 = d2, r3 = d3;
            Input<uint> ia0 = a0, ia1 = a1, ia2 = a2, ia3 = a3, ib0 = b0, ib1 = b1;
            CudaAsm.EmitRef(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};",
                ref r0, ref r1, ref r2, ref r3, ref ia0, ref ia1, ref ia2, ref ia3, ref ib0, ref ib1);
            d0 = r0.Value;
            d1 = r1.Value;
            d2 = r2.Value;
            d3 = r3.Value;
        }
        else
        {
            Emulate(ref d0, ref d1, ref d2, ref d3, a0, a1, a2, a3, b0, b1, exchange);
        }
    }

    /// <summary><see cref="MultiplyAccumulate(ref float, ref float, ref float, ref float, uint, uint, uint, uint, uint, uint, ArrayView{uint})"/> on register structs.</summary>
    public static void MultiplyAccumulate(ref MmaTile d, MmaOperandA a, uint b0, uint b1, ArrayView<uint> exchange) =>
        MultiplyAccumulate(ref d.C0, ref d.C1, ref d.C2, ref d.C3, a.A0, a.A1, a.A2, a.A3, b0, b1, exchange);

    private static void Emulate(ref float d0, ref float d1, ref float d2, ref float d3,
        uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, ArrayView<uint> exchange)
    {
        int lane = Warp.LaneIdx;
        int slot = lane * 6;
        exchange[slot] = a0;
        exchange[slot + 1] = a1;
        exchange[slot + 2] = a2;
        exchange[slot + 3] = a3;
        exchange[slot + 4] = b0;
        exchange[slot + 5] = b1;
        Warp.Barrier();
        int g = lane >> 2, t = lane & 3;
        d0 = EmulatedElement(exchange, g, 2 * t, d0);
        d1 = EmulatedElement(exchange, g, 2 * t + 1, d1);
        d2 = EmulatedElement(exchange, g + 8, 2 * t, d2);
        d3 = EmulatedElement(exchange, g + 8, 2 * t + 1, d3);
        // No lane may publish its next fragments before every lane has read these.
        Warp.Barrier();
    }

    /// <summary>C[row][col] + Σₖ A[row][k]·B[k][col], reading each element from the lane that holds it.</summary>
    private static float EmulatedElement(ArrayView<uint> exchange, int row, int col, float c)
    {
        float sum = c;
        for (int k = 0; k < 16; k++)
        {
            int pairLane = (k & 7) >> 1;
            uint aWord = exchange[((row & 7) * 4 + pairLane) * 6 + (row >> 3) + ((k >> 3) << 1)];
            uint bWord = exchange[(col * 4 + pairLane) * 6 + 4 + (k >> 3)];
            sum += BFloat16Pair.Element(aWord, k & 1) * BFloat16Pair.Element(bWord, k & 1);
        }
        return sum;
    }
}

/// <summary>Two bf16 values in one 32-bit word, the first in the low half: the register format of mma's inputs.</summary>
public static class BFloat16Pair
{
    public static uint Pack(float first, float second) =>
        HalfWords.FloatToBFloat16(first) | ((uint)HalfWords.FloatToBFloat16(second) << 16);

    /// <summary>Element 0 (low half) or 1 (high half) widened to float32, exactly.</summary>
    public static float Element(uint word, int index) =>
        Interop.IntAsFloat(index == 0 ? word << 16 : word & 0xFFFF0000u);

    /// <summary>The bf16 word (low 16 bits) of element 0 or 1.</summary>
    public static uint Half(uint word, int index) => index == 0 ? word & 0xFFFFu : word >> 16;
}
