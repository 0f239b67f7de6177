using ILGPU;
using ILGPU.Algorithms;

namespace InFluxEdit.Runtime.Backends.Gpu.Kernels;

/// <summary>
/// Where the operands of one batched row-major product live: element (product p, stored row r, stored column q) of
/// an operand is Offset + p·BatchStride + r·RowStride + q (BatchStride 0 reuses one matrix for every product).
/// </summary>
public readonly struct GemmOperand
{
    public readonly long Offset;
    public readonly long BatchStride;
    public readonly long RowStride;

    public GemmOperand(long offset, long batchStride, long rowStride)
    {
        Offset = offset;
        BatchStride = batchStride;
        RowStride = rowStride;
    }
}

/// <summary>
/// The sizes of a batched product c = alpha·op(a)·op(b) + beta·c ([M, N] per output). Output z of the grid sums
/// products z·SumCount … z·SumCount + SumCount − 1 (SumCount 1: one product per output; more: the weight-gradient
/// sum over a batch, kept in registers so beta applies once). K = 0 reads neither a nor b.
/// </summary>
public readonly struct GemmShape
{
    public readonly int M, N, K, SumCount, TransposeA, TransposeB;
    public readonly float Alpha, Beta;

    public GemmShape(int m, int n, int k, int sumCount, bool transposeA, bool transposeB, float alpha, float beta)
    {
        M = m;
        N = n;
        K = k;
        SumCount = sumCount;
        TransposeA = transposeA ? 1 : 0;
        TransposeB = transposeB ? 1 : 0;
        Alpha = alpha;
        Beta = beta;
    }
}

/// <summary>
/// Rows split into chunks for column sums: output o (a sample, or everything) owns flat rows
/// [o·RowsPerOutput, (o + 1)·RowsPerOutput), chunk j of it the rows [j·RowsPerChunk, +RowsPerChunk). Partial sums
/// go to partials[s·PartialsPerSum + (o·Chunks + j)·Cols + col] for sum s, and are added in chunk order afterwards,
/// so a result does not depend on thread timing.
/// </summary>
public readonly struct ColumnChunks
{
    public readonly int Cols, Chunks, RowsPerChunk, RowsPerOutput;
    public readonly long PartialsPerSum;

    public ColumnChunks(int cols, int chunks, int rowsPerChunk, int rowsPerOutput, long partialsPerSum)
    {
        Cols = cols;
        Chunks = chunks;
        RowsPerChunk = rowsPerChunk;
        RowsPerOutput = rowsPerOutput;
        PartialsPerSum = partialsPerSum;
    }

    /// <summary>What the partials thread <paramref name="index"/> (one per output, chunk, column) sums over.</summary>
    public ChunkCell Cell(int index)
    {
        int col = index % Cols;
        int rest = index / Cols;
        int chunk = rest % Chunks;
        int output = rest / Chunks;
        int first = chunk * RowsPerChunk;
        return new ChunkCell(col, first, XMath.Min(first + RowsPerChunk, RowsPerOutput), (long)output * RowsPerOutput);
    }

    /// <summary>
    /// Sum <paramref name="sum"/>'s partials of (<paramref name="output"/>, <paramref name="col"/>) added in chunk order,
    /// in float64: the grid depends on the sizes alone, so the same gradients give the same total on every run.
    /// </summary>
    public double Total(ArrayView<float> partials, int sum, int output, int col)
    {
        long first = sum * PartialsPerSum + (long)output * Chunks * Cols + col;
        double total = 0;
        for (int j = 0; j < Chunks; j++)
            total += partials[first + (long)j * Cols];
        return total;
    }
}

/// <summary>A partials thread's column and rows: FlatRow0 + r for r in [First, End).</summary>
public readonly struct ChunkCell
{
    public readonly int Col, First, End;
    public readonly long FlatRow0;

    public ChunkCell(int col, int first, int end, long flatRow0)
    {
        Col = col;
        First = first;
        End = end;
        FlatRow0 = flatRow0;
    }
}

/// <summary>The float32 scalars of one AdamW step (computed on the host in float64, as torch does).</summary>
public readonly struct AdamWFactors
{
    public readonly float Decay, LerpWeight, Beta2, OneMinusBeta2, SqrtBiasCorrection2, Eps, NegativeStepSize;
    public readonly int LerpFromStart;

    public AdamWFactors(float decay, float lerpWeight, float beta2, float oneMinusBeta2, float sqrtBiasCorrection2,
        float eps, float negativeStepSize)
    {
        Decay = decay;
        LerpWeight = lerpWeight;
        Beta2 = beta2;
        OneMinusBeta2 = oneMinusBeta2;
        SqrtBiasCorrection2 = sqrtBiasCorrection2;
        Eps = eps;
        NegativeStepSize = negativeStepSize;
        LerpFromStart = lerpWeight < 0.5f ? 1 : 0;
    }
}

/// <summary>
/// The training ops' kernels (see <see cref="ITrainingBackend"/> for each op's exact meaning). Element-wise kernels
/// read every input at their element before writing it, so an output may alias an input where the op allows.
/// </summary>
public static class BackwardKernels
{
    // ------------------------------------------------------------------ element-wise

    /// <summary>dx = dy·σ(x)·(1 + x·(1 − σ(x))).</summary>
    public static void SiluBackward(Index1D index, int cols,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        float g = dyData[dy.IndexOf(flatRow, col)];
        float sigmoid = 1f / (1f + XMath.Exp(-v));
        dxData[dx.IndexOf(flatRow, col)] = g * sigmoid * (1f + v * (1f - sigmoid));
    }

    /// <summary>dx = dy·(σ(z) + x·σ(z)(1 − σ(z))·z'), z = k(x + c·x³): the derivative of GELU's x·σ(z) form.</summary>
    public static void GeluTanhBackward(Index1D index, int cols,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData)
    {
        const float TwoSqrtTwoOverPi = 1.5957691216057308f;
        const float Cubic = 0.044715f;
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        float v = xData[x.IndexOf(flatRow, col)];
        float g = dyData[dy.IndexOf(flatRow, col)];
        float z = TwoSqrtTwoOverPi * (v + Cubic * v * v * v);
        float sigmoid = 1f / (1f + XMath.Exp(-z));
        float dz = TwoSqrtTwoOverPi * (1f + 3f * Cubic * v * v);
        dxData[dx.IndexOf(flatRow, col)] = g * (sigmoid + v * sigmoid * (1f - sigmoid) * dz);
    }

    /// <summary>
    /// One thread per interleaved pair: (dx[2i], dx[2i+1]) = Mᵀ·(dy[2i], dy[2i+1]) with M the pair's 2×2 matrix
    /// [m00, m01, m10, m11] in pe. Reads both before writing both, so dx may alias dy.
    /// </summary>
    public static void ApplyRopeBackward(Index1D index, int pairsPerRow, int pairsPerHead,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix pe, Elements peData)
    {
        long flatRow = index / pairsPerRow;
        int pair = index - (int)(flatRow * pairsPerRow);
        int p = pair - pair / pairsPerHead * pairsPerHead;
        long source = dy.IndexOf(flatRow, 2 * pair);
        float g0 = dyData[source];
        float g1 = dyData[source + 1];
        long matrix = pe.IndexOf(flatRow, 4 * p);
        float m00 = peData[matrix], m01 = peData[matrix + 1], m10 = peData[matrix + 2], m11 = peData[matrix + 3];
        long target = dx.IndexOf(flatRow, 2 * pair);
        dxData[target] = m00 * g0 + m10 * g1;
        dxData[target + 1] = m01 * g0 + m11 * g1;
    }

    /// <summary>x = value at every element of the view.</summary>
    public static void Fill(Index1D index, int cols, float value, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        xData[x.IndexOf(flatRow, col)] = value;
    }

    /// <summary>x ·= factor (a plain product: NaN·0 stays NaN, as on the CPU).</summary>
    public static void ScaleInPlace(Index1D index, int cols, float factor, StridedMatrix x, Elements xData)
    {
        long flatRow = index / cols;
        int col = index - (int)(flatRow * cols);
        long at = x.IndexOf(flatRow, col);
        xData[at] = xData[at] * factor;
    }

    /// <summary>torch.optim.AdamW's update of element i, in torch's order of float32 operations.</summary>
    public static void AdamW(Index1D i, AdamWFactors s,
        ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v)
    {
        float p = param[i] * s.Decay;
        float g = grad[i];
        float previous = m[i];
        float mean = s.LerpFromStart != 0
            ? previous + s.LerpWeight * (g - previous)
            : g - (g - previous) * (1f - s.LerpWeight);
        float second = v[i] * s.Beta2 + s.OneMinusBeta2 * g * g;
        float denominator = XMath.Sqrt(second) / s.SqrtBiasCorrection2 + s.Eps;
        m[i] = mean;
        v[i] = second;
        param[i] = p + s.NegativeStepSize * mean / denominator;
    }

    // ------------------------------------------------------------------ column sums over rows

    /// <summary>One thread per (output, chunk, column): the chunk's Σ x into partials (sum 0).</summary>
    public static void SumRowsPartials(Index1D index, ColumnChunks s,
        StridedMatrix x, Elements xData, ArrayView<float> partials)
    {
        var cell = s.Cell(index);
        int col = cell.Col, first = cell.First, end = cell.End;
        long flatRow0 = cell.FlatRow0;
        float sum = 0f;
        for (int r = first; r < end; r++)
            sum += xData[x.IndexOf(flatRow0 + r, col)];
        partials[index] = sum;
    }

    /// <summary>
    /// One thread per (sample, chunk, column) of the modulation backward: dx = dy·(1 + scale) on the chunk's rows,
    /// Σ dy into sum 0 and Σ dy·x into sum 1. dx may alias dy or x: each element is read before it is written.
    /// </summary>
    public static void ModulateBackwardPartials(Index1D index, ColumnChunks s,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData, StridedMatrix scale, Elements scaleData,
        ArrayView<float> partials)
    {
        var cell = s.Cell(index);
        int col = cell.Col, first = cell.First, end = cell.End;
        long flatRow0 = cell.FlatRow0;
        float shiftSum = 0f, scaleSum = 0f;
        for (int r = first; r < end; r++)
        {
            long flatRow = flatRow0 + r;
            float g = dyData[dy.IndexOf(flatRow, col)];
            float v = xData[x.IndexOf(flatRow, col)];
            float factor = scaleData[scale.IndexOf(flatRow, col)];
            shiftSum += g;
            scaleSum += g * v;
            dxData[dx.IndexOf(flatRow, col)] = g * factor + g;
        }
        partials[index] = shiftSum;
        partials[s.PartialsPerSum + index] = scaleSum;
    }

    /// <summary>
    /// One thread per (sample, chunk, column) of the gated-residual backward: dx = dy·gate, Σ dy·x into sum 0.
    /// dx may alias dy or x.
    /// </summary>
    public static void GatedResidualBackwardPartials(Index1D index, ColumnChunks s,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData, StridedMatrix gate, Elements gateData,
        ArrayView<float> partials)
    {
        var cell = s.Cell(index);
        int col = cell.Col, first = cell.First, end = cell.End;
        long flatRow0 = cell.FlatRow0;
        float gateSum = 0f;
        for (int r = first; r < end; r++)
        {
            long flatRow = flatRow0 + r;
            float g = dyData[dy.IndexOf(flatRow, col)];
            gateSum += g * xData[x.IndexOf(flatRow, col)];
            dxData[dx.IndexOf(flatRow, col)] = g * gateData[gate.IndexOf(flatRow, col)];
        }
        partials[index] = gateSum;
    }

    /// <summary>
    /// One thread per (output, column): y = Σ_chunks partials of sum <paramref name="sum"/> (added in chunk order, in
    /// float64) + beta·y, with beta = 0 not reading y. y's flat row is the output.
    /// </summary>
    public static void FinishColumnSums(Index1D index, ColumnChunks s, int sum, float beta,
        StridedMatrix y, Elements yData, ArrayView<float> partials)
    {
        int col = index % s.Cols;
        int output = index / s.Cols;
        long at = y.IndexOf(output, col);
        float value = (float)s.Total(partials, sum, output, col);
        yData[at] = beta == 0f ? value : value + beta * yData[at];
    }

    // ------------------------------------------------------------------ row reductions (one group per row)

    /// <summary>Largest group the row kernels accept.</summary>
    public const int MaxGroupSize = 256;

    /// <summary>
    /// Grid: one group per flat row. dx = rstd·(dy − mean(dy) − x̂·mean(dy·x̂)) with mean and rstd recomputed as the
    /// forward kernel computes them (two passes). Each thread reads and writes only its columns and every read of dy
    /// for the sums happens before the last barrier, so dx may alias dy.
    /// </summary>
    public static void LayerNormBackward(int cols, float eps,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData)
    {
        var partials = SharedMemory.Allocate<float>(MaxGroupSize);
        long flatRow = Grid.IdxX;
        int thread = Group.IdxX;
        int threads = Group.DimX;

        float sum = 0f;
        for (int col = thread; col < cols; col += threads)
            sum += xData[x.IndexOf(flatRow, col)];
        float mean = RowNormKernels.GroupSum(partials, sum) / cols;
        float squares = 0f;
        for (int col = thread; col < cols; col += threads)
        {
            float d = xData[x.IndexOf(flatRow, col)] - mean;
            squares += d * d;
        }
        float rstd = 1f / XMath.Sqrt(RowNormKernels.GroupSum(partials, squares) / cols + eps);

        float dySum = 0f, dyXhatSum = 0f;
        for (int col = thread; col < cols; col += threads)
        {
            float g = dyData[dy.IndexOf(flatRow, col)];
            dySum += g;
            dyXhatSum += g * ((xData[x.IndexOf(flatRow, col)] - mean) * rstd);
        }
        float meanDy = RowNormKernels.GroupSum(partials, dySum) / cols;
        float meanDyXhat = RowNormKernels.GroupSum(partials, dyXhatSum) / cols;

        for (int col = thread; col < cols; col += threads)
        {
            float xhat = (xData[x.IndexOf(flatRow, col)] - mean) * rstd;
            float g = dyData[dy.IndexOf(flatRow, col)];
            dxData[dx.IndexOf(flatRow, col)] = (g - meanDy - xhat * meanDyXhat) * rstd;
        }
    }

    /// <summary>
    /// Grid: one group per (flat row, column group). dx = r·g − x·r³·Σ(g·x)/groupSize, g = dy·scale,
    /// r = rsqrt(mean(x²) + eps). dx may alias dy (see <see cref="LayerNormBackward"/>).
    /// </summary>
    public static void RmsNormBackward(int groupSize, int groupsPerRow, float eps,
        StridedMatrix dx, Elements dxData, StridedMatrix dy, Elements dyData,
        StridedMatrix x, Elements xData, ArrayView<float> scale)
    {
        var partials = SharedMemory.Allocate<float>(MaxGroupSize);
        long flatRow = Grid.IdxX / groupsPerRow;
        int firstCol = (Grid.IdxX - (int)(flatRow * groupsPerRow)) * groupSize;
        int thread = Group.IdxX;
        int threads = Group.DimX;

        float squares = 0f, dot = 0f;
        for (int i = thread; i < groupSize; i += threads)
        {
            float v = xData[x.IndexOf(flatRow, firstCol + i)];
            squares += v * v;
            dot += dyData[dy.IndexOf(flatRow, firstCol + i)] * scale[i] * v;
        }
        float r = 1f / XMath.Sqrt(RowNormKernels.GroupSum(partials, squares) / groupSize + eps);
        float projection = r * r * r * RowNormKernels.GroupSum(partials, dot) / groupSize;

        for (int i = thread; i < groupSize; i += threads)
        {
            float v = xData[x.IndexOf(flatRow, firstCol + i)];
            float g = dyData[dy.IndexOf(flatRow, firstCol + i)] * scale[i];
            dxData[dx.IndexOf(flatRow, firstCol + i)] = g * r - v * projection;
        }
    }

    /// <summary>
    /// Grid: one group per row of dense [rows, cols] probability and probability-gradient matrices. In place on the
    /// gradient: dS = P·(dP − Σ P·dP)·scale, the gradient with respect to the unscaled scores.
    /// </summary>
    public static void SoftmaxBackwardRows(int cols, float scale, ArrayView<float> probabilities, ArrayView<float> gradients)
    {
        var partials = SharedMemory.Allocate<float>(MaxGroupSize);
        long start = (long)Grid.IdxX * cols;
        int thread = Group.IdxX;
        int threads = Group.DimX;
        float dot = 0f;
        for (int c = thread; c < cols; c += threads)
            dot += probabilities[start + c] * gradients[start + c];
        float centre = RowNormKernels.GroupSum(partials, dot);
        for (int c = thread; c < cols; c += threads)
            gradients[start + c] = probabilities[start + c] * (gradients[start + c] - centre) * scale;
    }

    /// <summary>
    /// Grid: any number of groups (a power-of-two size ≤ <see cref="MaxGroupSize"/>); group g writes to partials[g]
    /// the float64 Σ x² of the elements e ≡ g·groupSize + thread (mod grid·groupSize) of a count-element view.
    /// Widened before squaring, so large floats do not overflow; NaN and ±Inf propagate.
    /// </summary>
    public static void SumOfSquaresPartials(long count, int cols, StridedMatrix x, Elements xData,
        ArrayView<double> partials)
    {
        var shared = SharedMemory.Allocate<double>(MaxGroupSize);
        int thread = Group.IdxX;
        int threads = Group.DimX;
        long step = (long)Grid.DimX * threads;
        double sum = 0;
        for (long e = (long)Grid.IdxX * threads + thread; e < count; e += step)
        {
            long flatRow = e / cols;
            int col = (int)(e - flatRow * cols);
            double v = xData[x.IndexOf(flatRow, col)];
            sum += v * v;
        }
        shared[thread] = sum;
        Group.Barrier();
        for (int half = threads / 2; half > 0; half >>= 1)
        {
            if (thread < half)
                shared[thread] += shared[thread + half];
            Group.Barrier();
        }
        if (thread == 0)
            partials[Grid.IdxX] = shared[0];
    }

    // ------------------------------------------------------------------ general product (where cuBLAS is not)

    public const int TileK = 16;
    private const int MaxTileSide = 64;
    private const int SharedStride = MaxTileSide + 1;

    /// <summary>
    /// c = alpha·Σ op(a)·op(b) + beta·c (see <see cref="GemmShape"/>), tiled through shared memory like
    /// <see cref="GemmKernels"/>: grid (⌈N / 4·DimX⌉, ⌈M / 4·DimY⌉, outputs), group (DimX, DimY) ≤ 16 × 16, each thread
    /// a 4×4 block of c. Loads follow the stored layout, so a transposed operand is still read along its rows.
    /// </summary>
    public static void GeneralGemm(GemmShape s, GemmOperand a, Elements aData,
        GemmOperand b, Elements bData, GemmOperand c, Elements cData)
    {
        var aTile = SharedMemory.Allocate<float>(TileK * SharedStride);
        var bTile = SharedMemory.Allocate<float>(TileK * SharedStride);

        int tx = Group.IdxX, ty = Group.IdxY;
        int dimX = Group.DimX, dimY = Group.DimY;
        int threads = dimX * dimY;
        int thread = ty * dimX + tx;
        int tileRows = 4 * dimY, tileCols = 4 * dimX;
        int rowBase = Grid.IdxY * tileRows;
        int colBase = Grid.IdxX * tileCols;
        int output = Grid.IdxZ;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0;
        float c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0;
        float c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        for (int product = output * s.SumCount; product < (output + 1) * s.SumCount; product++)
        {
            long aBase = a.Offset + product * a.BatchStride;
            long bBase = b.Offset + product * b.BatchStride;
            for (int k0 = 0; k0 < s.K; k0 += TileK)
            {
                // aTile[kk, i] = op(a)[rowBase + i, k0 + kk]; bTile[kk, j] = op(b)[k0 + kk, colBase + j].
                for (int e = thread; e < tileRows * TileK; e += threads)
                {
                    int i, kk;
                    if (s.TransposeA != 0)
                    {
                        kk = e / tileRows;
                        i = e - kk * tileRows;
                    }
                    else
                    {
                        i = e / TileK;
                        kk = e - i * TileK;
                    }
                    int row = rowBase + i, kIndex = k0 + kk;
                    float value = 0f;
                    if (row < s.M && kIndex < s.K)
                        value = aData[s.TransposeA != 0 ? aBase + kIndex * a.RowStride + row : aBase + row * a.RowStride + kIndex];
                    aTile[kk * SharedStride + i] = value;
                }
                for (int e = thread; e < tileCols * TileK; e += threads)
                {
                    int j, kk;
                    if (s.TransposeB != 0)
                    {
                        j = e / TileK;
                        kk = e - j * TileK;
                    }
                    else
                    {
                        kk = e / tileCols;
                        j = e - kk * tileCols;
                    }
                    int col = colBase + j, kIndex = k0 + kk;
                    float value = 0f;
                    if (col < s.N && kIndex < s.K)
                        value = bData[s.TransposeB != 0 ? bBase + col * b.RowStride + kIndex : bBase + kIndex * b.RowStride + col];
                    bTile[kk * SharedStride + j] = value;
                }
                Group.Barrier();

                for (int kk = 0; kk < TileK; kk++)
                {
                    int aRow = kk * SharedStride + ty;
                    float a0 = aTile[aRow], a1 = aTile[aRow + dimY], a2 = aTile[aRow + 2 * dimY], a3 = aTile[aRow + 3 * dimY];
                    int bRow = kk * SharedStride + tx;
                    float b0 = bTile[bRow], b1 = bTile[bRow + dimX], b2 = bTile[bRow + 2 * dimX], b3 = bTile[bRow + 3 * dimX];
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                }
                Group.Barrier();
            }
        }

        long cBase = c.Offset + output * c.BatchStride;
        int row0 = rowBase + ty, col0 = colBase + tx;
        StoreRow(s, c, cData, cBase, row0, col0, dimX, c00, c01, c02, c03);
        StoreRow(s, c, cData, cBase, row0 + dimY, col0, dimX, c10, c11, c12, c13);
        StoreRow(s, c, cData, cBase, row0 + 2 * dimY, col0, dimX, c20, c21, c22, c23);
        StoreRow(s, c, cData, cBase, row0 + 3 * dimY, col0, dimX, c30, c31, c32, c33);
    }

    private static void StoreRow(GemmShape s, GemmOperand c, Elements cData, long cBase, int row, int col0, int colStep,
        float v0, float v1, float v2, float v3)
    {
        if (row >= s.M)
            return;
        long rowBase = cBase + row * c.RowStride;
        StoreOne(s, cData, rowBase, col0, v0);
        StoreOne(s, cData, rowBase, col0 + colStep, v1);
        StoreOne(s, cData, rowBase, col0 + 2 * colStep, v2);
        StoreOne(s, cData, rowBase, col0 + 3 * colStep, v3);
    }

    private static void StoreOne(GemmShape s, Elements cData, long rowBase, int col, float value)
    {
        if (col >= s.N)
            return;
        long at = rowBase + col;
        // beta = 0 does not read c, so NaN there does not survive.
        cData[at] = s.Beta == 0f ? s.Alpha * value : s.Alpha * value + s.Beta * cData[at];
    }
}
