using ILGPU;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>A lane's four float32 accumulators of one 16×8 mma tile (c0..c3 of <see cref="TensorCoreMma"/>).</summary>
public struct MmaTile
{
    public float C0, C1, C2, C3;
}

/// <summary>A lane's A fragment of one 16×16 bf16 mma operand: four registers of two bf16 each.</summary>
public struct MmaOperandA
{
    public uint A0, A1, A2, A3;

    public MmaOperandA(uint a0, uint a1, uint a2, uint a3)
    {
        A0 = a0;
        A1 = a1;
        A2 = a2;
        A3 = a3;
    }

    /// <summary>
    /// Rows g and g + 8 of a 16×16 block from two accumulator tiles of its left and right 8 columns, rounded to bf16:
    /// an mma's output read as the next mma's A operand without leaving the lane.
    /// </summary>
    public static MmaOperandA FromTiles(MmaTile left, MmaTile right) => new(
        BFloat16Pair.Pack(left.C0, left.C1), BFloat16Pair.Pack(left.C2, left.C3),
        BFloat16Pair.Pack(right.C0, right.C1), BFloat16Pair.Pack(right.C2, right.C3));
}

/// <summary>Something done to each tile of <see cref="MmaTiles"/>, told the tile's index.</summary>
public interface IMmaTileOperation
{
    void Apply(ref MmaTile tile, int index);
}

/// <summary>
/// Eight accumulator tiles held in registers. ILGPU keeps a local struct's fields in registers when every access
/// names its field, while a local array indexed in a loop lives in (slow) local memory, also with a constant trip
/// count (checked in the PTX it writes); so the tiles are fields and <see cref="Apply{T}"/> visits them in
/// straight-line code.
/// </summary>
public struct MmaTileOctet
{
    public MmaTile T0, T1, T2, T3, T4, T5, T6, T7;

    /// <summary>Runs <paramref name="operation"/> on tiles 0..count−1 in order, telling each its index plus <paramref name="first"/>.</summary>
    public void Apply<T>(ref T operation, int count, int first) where T : struct, IMmaTileOperation
    {
        if (count > 0) operation.Apply(ref T0, first);
        if (count > 1) operation.Apply(ref T1, first + 1);
        if (count > 2) operation.Apply(ref T2, first + 2);
        if (count > 3) operation.Apply(ref T3, first + 3);
        if (count > 4) operation.Apply(ref T4, first + 4);
        if (count > 5) operation.Apply(ref T5, first + 5);
        if (count > 6) operation.Apply(ref T6, first + 6);
        if (count > 7) operation.Apply(ref T7, first + 7);
    }
}

/// <summary>Sixteen accumulator tiles in registers: a 16-row block over up to 128 head columns.</summary>
public struct MmaTiles
{
    public MmaTileOctet Low, High;

    /// <summary>Runs <paramref name="operation"/> on tiles 0..count−1 in order.</summary>
    public void Apply<T>(ref T operation, int count) where T : struct, IMmaTileOperation
    {
        Low.Apply(ref operation, count, 0);
        High.Apply(ref operation, count - 8, 8);
    }
}

/// <summary>
/// The A fragments of a 16-row block over up to 128 columns (8 steps of 16), in registers: a warp's queries in the
/// forward, its keys' values in the backward.
/// </summary>
public struct MmaRowFragments
{
    public const int MaxSteps = 8;

    public MmaOperandA S0, S1, S2, S3, S4, S5, S6, S7;

    /// <summary>Rows row0 and row1 = row0 + 8 (g and g + 8 of the block) of a head's columns, rounded to bf16.</summary>
    public static MmaRowFragments Load(AttentionTensor source, long flatRow0, bool valid0, long flatRow1, bool valid1,
        int headColumn, int t, int steps)
    {
        var fragments = new MmaRowFragments();
        if (steps > 0) fragments.S0 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 2 * t);
        if (steps > 1) fragments.S1 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 16 + 2 * t);
        if (steps > 2) fragments.S2 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 32 + 2 * t);
        if (steps > 3) fragments.S3 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 48 + 2 * t);
        if (steps > 4) fragments.S4 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 64 + 2 * t);
        if (steps > 5) fragments.S5 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 80 + 2 * t);
        if (steps > 6) fragments.S6 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 96 + 2 * t);
        if (steps > 7) fragments.S7 = LoadStep(source, flatRow0, valid0, flatRow1, valid1, headColumn + 112 + 2 * t);
        return fragments;
    }

    private static MmaOperandA LoadStep(AttentionTensor source, long flatRow0, bool valid0, long flatRow1, bool valid1, int col) => new(
        source.LoadPair(flatRow0, valid0, col), source.LoadPair(flatRow1, valid1, col),
        source.LoadPair(flatRow0, valid0, col + 8), source.LoadPair(flatRow1, valid1, col + 8));

    /// <summary>
    /// tile += these rows · Bᵀ over the first 16·steps columns, where B's 8 rows are consecutive rows of a tile of
    /// bf16 pairs along the columns (<paramref name="bRowWord"/>: lane g's row's first word, stride of pairs 1).
    /// </summary>
    public readonly void MultiplyByRows(ref MmaTile tile, ArrayView<uint> b, int bRowWord, int t, int steps, ArrayView<uint> exchange)
    {
        int word = bRowWord + t;
        if (steps > 0) TensorCoreMma.MultiplyAccumulate(ref tile, S0, b[word], b[word + 4], exchange);
        if (steps > 1) TensorCoreMma.MultiplyAccumulate(ref tile, S1, b[word + 8], b[word + 12], exchange);
        if (steps > 2) TensorCoreMma.MultiplyAccumulate(ref tile, S2, b[word + 16], b[word + 20], exchange);
        if (steps > 3) TensorCoreMma.MultiplyAccumulate(ref tile, S3, b[word + 24], b[word + 28], exchange);
        if (steps > 4) TensorCoreMma.MultiplyAccumulate(ref tile, S4, b[word + 32], b[word + 36], exchange);
        if (steps > 5) TensorCoreMma.MultiplyAccumulate(ref tile, S5, b[word + 40], b[word + 44], exchange);
        if (steps > 6) TensorCoreMma.MultiplyAccumulate(ref tile, S6, b[word + 48], b[word + 52], exchange);
        if (steps > 7) TensorCoreMma.MultiplyAccumulate(ref tile, S7, b[word + 56], b[word + 60], exchange);
    }
}
