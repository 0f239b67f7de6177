using ILGPU;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>Reads element i of a weight matrix as float32, whatever its storage.</summary>
public interface IWeightElements
{
    float Load(long index);
}

public readonly struct Float32Weights : IWeightElements
{
    private readonly ArrayView<float> data;
    public Float32Weights(ArrayView<float> data) => this.data = data;
    public float Load(long index) => data[index];
}

public readonly struct BFloat16Weights : IWeightElements
{
    private readonly ArrayView<ushort> data;
    public BFloat16Weights(ArrayView<ushort> data) => this.data = data;
    public float Load(long index) => HalfWords.BFloat16ToFloat(data[index]);
}

public readonly struct Float16Weights : IWeightElements
{
    private readonly ArrayView<ushort> data;
    public Float16Weights(ArrayView<ushort> data) => this.data = data;
    public float Load(long index) => HalfWords.Float16ToFloat(data[index]);
}

/// <summary>
/// y[m, n] = Σ_k x[m, k]·W[n, k] + bias[n] with W row-major [N, K] (PyTorch layout), tiled through shared memory.
/// The GEMM wherever cuBLAS is not: the CPU simulator, a machine without libcublas. A group of DimX × DimY threads
/// computes a (4·DimY) × (4·DimX) tile of y, each thread a 4×4 block whose rows are ty + i·DimY and columns
/// tx + j·DimX (i, j &lt; 4): strided so that a warp's reads of the B tile hit 32 different banks.
/// 16-bit weights are widened as they are loaded; accumulation is float32.
/// The 16 accumulators are spelled out because ILGPU 1.5.3 does not unroll loops and an array would live in
/// local memory.
/// </summary>
public static class GemmKernels
{
    public const int TileK = 16;
    public const int MaxThreadsPerSide = 16;
    public const int MaxTileSide = 4 * MaxThreadsPerSide;
    // +1 column: the loaders store along k, so an unpadded stride of 64 would put a warp's stores in one bank.
    private const int SharedStride = MaxTileSide + 1;

    /// <summary>Grid (⌈N / 4·DimX⌉, ⌈M / 4·DimY⌉), group (DimX, DimY), DimX, DimY ≤ 16.</summary>
    public static void LinearFloat32(int m, int n, int k,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        ArrayView<float> weights, ArrayView<float> bias, int hasBias) =>
        LinearTile(m, n, k, y, yData, x, xData, new Float32Weights(weights), bias, hasBias);

    public static void LinearBFloat16(int m, int n, int k,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        ArrayView<ushort> weights, ArrayView<float> bias, int hasBias) =>
        LinearTile(m, n, k, y, yData, x, xData, new BFloat16Weights(weights), bias, hasBias);

    public static void LinearFloat16(int m, int n, int k,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        ArrayView<ushort> weights, ArrayView<float> bias, int hasBias) =>
        LinearTile(m, n, k, y, yData, x, xData, new Float16Weights(weights), bias, hasBias);

    private static void LinearTile<TWeights>(int m, int n, int k,
        StridedMatrix y, Elements yData, StridedMatrix x, Elements xData,
        TWeights weights, ArrayView<float> bias, int hasBias)
        where TWeights : struct, IWeightElements
    {
        var xTile = SharedMemory.Allocate<float>(TileK * SharedStride);
        var wTile = SharedMemory.Allocate<float>(TileK * SharedStride);

        int tx = Group.IdxX, ty = Group.IdxY;
        int dimX = Group.DimX, dimY = Group.DimY;
        int threads = dimX * dimY;
        int thread = ty * dimX + tx;
        int tileRows = 4 * dimY, tileCols = 4 * dimX;
        int rowBase = Grid.IdxY * tileRows;
        int colBase = Grid.IdxX * tileCols;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0;
        float c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0;
        float c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        for (int k0 = 0; k0 < k; k0 += TileK)
        {
            // Consecutive threads load consecutive k of one row: contiguous in both x and W.
            for (int e = thread; e < tileRows * TileK; e += threads)
            {
                int r = e / TileK, kk = e - r * TileK;
                int row = rowBase + r, kIndex = k0 + kk;
                xTile[kk * SharedStride + r] = row < m && kIndex < k ? xData[x.IndexOf(row, kIndex)] : 0f;
            }
            for (int e = thread; e < tileCols * TileK; e += threads)
            {
                int c = e / TileK, kk = e - c * TileK;
                int col = colBase + c, kIndex = k0 + kk;
                wTile[kk * SharedStride + c] = col < n && kIndex < k ? weights.Load((long)col * k + kIndex) : 0f;
            }
            Group.Barrier();

            for (int kk = 0; kk < TileK; kk++)
            {
                int xRow = kk * SharedStride + ty;
                float a0 = xTile[xRow], a1 = xTile[xRow + dimY], a2 = xTile[xRow + 2 * dimY], a3 = xTile[xRow + 3 * dimY];
                int wRow = kk * SharedStride + tx;
                float b0 = wTile[wRow], b1 = wTile[wRow + dimX], b2 = wTile[wRow + 2 * dimX], b3 = wTile[wRow + 3 * dimX];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }

        int row0 = rowBase + ty, col0 = colBase + tx;
        Store(m, n, y, yData, bias, hasBias, row0, col0, dimX, c00, c01, c02, c03);
        Store(m, n, y, yData, bias, hasBias, row0 + dimY, col0, dimX, c10, c11, c12, c13);
        Store(m, n, y, yData, bias, hasBias, row0 + 2 * dimY, col0, dimX, c20, c21, c22, c23);
        Store(m, n, y, yData, bias, hasBias, row0 + 3 * dimY, col0, dimX, c30, c31, c32, c33);
    }

    private static void Store(int m, int n, StridedMatrix y, Elements yData,
        ArrayView<float> bias, int hasBias, int row, int col0, int colStep,
        float v0, float v1, float v2, float v3)
    {
        if (row >= m)
            return;
        StoreOne(n, y, yData, bias, hasBias, row, col0, v0);
        StoreOne(n, y, yData, bias, hasBias, row, col0 + colStep, v1);
        StoreOne(n, y, yData, bias, hasBias, row, col0 + 2 * colStep, v2);
        StoreOne(n, y, yData, bias, hasBias, row, col0 + 3 * colStep, v3);
    }

    private static void StoreOne(int n, StridedMatrix y, Elements yData,
        ArrayView<float> bias, int hasBias, int row, int col, float value)
    {
        if (col < n)
            yData[y.IndexOf(row, col)] = hasBias != 0 ? value + bias[col] : value;
    }
}
