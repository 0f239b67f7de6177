using System.Runtime.InteropServices;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// The kernels a compiled model launches. One generated graph runs on every backend: the CPU backend with
/// vectorised, multi-threaded managed code, the CUDA backend with ILGPU kernels and cuBLAS.
/// Every op reads and writes <see cref="View"/>s of float32 tensors (or of <see cref="AllocateActivation"/>'s narrower
/// ones, on a backend that has them); an output view may alias an input of the same
/// shape only where the op says so. Ops are enqueued in order; <see cref="Synchronize"/> waits for them.
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>"cpu" or "cuda".</summary>
    string Name { get; }

    /// <summary>What runs, for the user: device, threads or SM count, GEMM path.</summary>
    string Description { get; }

    /// <summary>A float32 tensor; its contents are undefined until written.</summary>
    DeviceTensor Allocate(int[] shape);

    /// <summary>
    /// An activation of a forward that only runs (no training pass reads it back); contents undefined until written.
    /// float32 by default; a backend may store it narrower (the CUDA backend in bf16 precision stores bf16 words, which
    /// halves the memory traffic of every op). Every op accepts such views wherever it accepts float32 ones (ops compute
    /// in float32 and round on store), and <see cref="Download"/> widens them.
    /// </summary>
    DeviceTensor AllocateActivation(int[] shape) => Allocate(shape);

    /// <summary>
    /// Frees the memory a backend keeps for reuse (a GPU's parked pool buffers) and returns its bytes: called between a
    /// pipeline's phases (text encoders, VAE, transformer), whose sizes differ, so one phase's buffers do not sit
    /// beside the next one's. A backend that keeps nothing returns 0.
    /// </summary>
    long ReleaseCachedMemory() => 0;

    /// <summary>Copies float32 host data to the device.</summary>
    DeviceTensor Upload(HostTensor host);

    /// <summary>
    /// Stores a weight. <paramref name="raw"/> holds little-endian elements of <paramref name="dtype"/>.
    /// The backend chooses its storage dtype (the returned tensor's DType): bf16/f16 may stay 16-bit.
    /// </summary>
    DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw);

    /// <summary>
    /// Stores a linear layer's weight [out, in] kept in a quantized format (fp8 or a ggml block format, blocks along each
    /// row, so in must be a whole number of blocks): its values are <paramref name="weight"/>'s decoded values. Only
    /// <see cref="Linear"/> and the training products of its backward may read the returned tensor. A backend whose products
    /// read the blocks keeps them (the CPU backend dequantizes a panel of rows at a time, the CUDA backend a whole weight
    /// into a pooled scratch buffer per product); this default, for a backend without quantized kernels, decodes them
    /// once here and stores float32, which holds every decoded value exactly.
    /// </summary>
    DeviceTensor UploadQuantizedWeight(int[] shape, QuantizedBlocks weight)
    {
        QuantizedWeights.RequireLinearShape(shape, weight);
        return UploadWeight(shape, DType.F32, MemoryMarshal.AsBytes(weight.Decode().AsSpan()));
    }

    /// <summary>Whether <see cref="UploadQuantizedWeight"/> keeps the blocks (false: it decodes them to float32).</summary>
    bool HoldsQuantizedWeights => false;

    /// <summary>Copies a view back as a dense host tensor of the given logical shape.</summary>
    HostTensor Download(View view, int[] shape);

    void Synchronize();

    /// <summary>y[b,r,:] = x[b,r,:]·Wᵀ + bias; W is [out, in] (PyTorch layout), x has in columns, y out columns.</summary>
    void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias);

    /// <summary>Per row: (x − mean)/sqrt(var + eps), biased variance, no affine. y may alias x.</summary>
    void LayerNorm(View y, View x, float eps);

    /// <summary>
    /// Per group of <paramref name="groupSize"/> consecutive columns: y = x·rsqrt(mean(x²) + eps)·scale, scale has
    /// groupSize elements. y may alias x.
    /// </summary>
    void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps);

    /// <summary>y = (1 + scale)·x + shift, elementwise (shift/scale usually broadcast rows). y may alias x.</summary>
    void Modulate(View y, View x, View shift, View scale);

    /// <summary>y = residual + gate·x, elementwise. y may alias residual.</summary>
    void GatedResidual(View y, View residual, View x, View gate);

    /// <summary>y = a + b. y may alias a.</summary>
    void Add(View y, View a, View b);

    /// <summary>y = x·sigmoid(x). y may alias x.</summary>
    void Silu(View y, View x);

    /// <summary>y = 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). y may alias x.</summary>
    void GeluTanh(View y, View x);

    /// <summary>y = x (strided copy).</summary>
    void Copy(View y, View x);

    /// <summary>y = scale·x + shift with constants, elementwise. y may alias x.</summary>
    void ScaleShift(View y, View x, float scale, float shift);

    /// <summary>Per batch, y[b, c, r] = x[b, r, c]: y.Rows = x.Cols and y.Cols = x.Rows (NCHW ↔ channels-last).</summary>
    void Transpose(View y, View x);

    /// <summary>
    /// Sinusoidal embedding of the scalars in t (one per row, Cols = 1): t' = timeFactor·t,
    /// freq[k] = exp(−ln(maxPeriod)·k/half), y = [cos(t'·freq) | sin(t'·freq)], y.Cols = 2·half.
    /// </summary>
    void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod);

    /// <summary>
    /// RoPE rotation matrices for position ids (ids.Cols = number of axes). For axis a with width d_a,
    /// ω[j] = theta^(−2j/d_a), angle = pos_a·ω[j]; angles of all axes concatenated (axis 0 first).
    /// Each angle p writes [cos, −sin, sin, cos] at columns 4p..4p+3 of pe (pe.Cols = 2·Σd_a).
    /// </summary>
    void RopeEmbed(View pe, View ids, int[] axesDim, float theta);

    /// <summary>
    /// Rotates interleaved pairs (2p, 2p+1) of every head of x (Cols = heads·headDim) with pe's matrices
    /// (pe.Cols = headDim/2·4, one row per token, shared by all heads). y may alias x.
    /// </summary>
    void ApplyRope(View y, View x, View pe, int headDim);

    /// <summary>
    /// Multi-head softmax(q·kᵀ·scale)·v without mask, heads concatenated head-major in the columns of q, k, v
    /// and o (Cols = heads·headDim). q and o have the query rows, k and v the key rows.
    /// </summary>
    void Attention(View o, View q, View k, View v, int heads, float scale);

    // ---------------------------------------------------------------- image ops (the autoencoder)
    // Images are channels-last token tensors: a View of [Batch, Rows = height·width, Cols = channels], pixel (py, px)
    // in row py·width + px. A 1×1 conv is then a Linear, the VAE's attention a single-head Attention on [B, HW, C].
    // These ops need rows that do not overlap (RowStride ≥ Cols); Offset, RowStride and BatchStride are otherwise free.

    /// <summary>
    /// 2-D cross-correlation (PyTorch's Conv2d, dilation 1, groups 1) with zero padding:
    /// y[b, oy·outW + ox, co] = bias[co] + Σ_{ci, ky, kx} weight[co, ci, ky, kx] · x̂[b, oy·stride + ky − top, ox·stride + kx − left, ci],
    /// where x̂ is x (pixels [b, py·width + px, ci]) read as zero outside 0 ≤ py &lt; height, 0 ≤ px &lt; width.
    /// <paramref name="weight"/> is [Cout, Cin, kh, kw] as PyTorch checkpoints store it (any storage dtype the backend
    /// returned from <see cref="UploadWeight"/>); <paramref name="bias"/> has Cout elements or is null.
    /// x is [B, height·width, Cin]; y is [B, outH·outW, Cout] with outH = (height + top + bottom − kh)/stride + 1 and
    /// outW = (width + left + right − kw)/stride + 1 (integer division, as PyTorch). y must not overlap x.
    /// Backends may keep a repacked copy of an uploaded weight, so weights are read-only once uploaded.
    /// </summary>
    void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding);

    /// <summary>
    /// GroupNorm (PyTorch's, channels-last): the C columns split into <paramref name="groups"/> groups of C/groups
    /// consecutive channels; for each (batch, group), mean μ and biased variance σ² over all rows (pixels) and the
    /// group's channels; y = (x − μ)/sqrt(σ² + eps)·scale[c] + bias[c]. scale and bias have C elements; a null one
    /// means 1 (scale) or 0 (bias). Statistics are accumulated in float64. y may alias x.
    /// </summary>
    void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps);

    /// <summary>
    /// Nearest-neighbour ×2 upsampling (PyTorch's interpolate(scale_factor=2, mode="nearest")): x is
    /// [B, height·width, C], y is [B, (2·height)·(2·width), C], y[b, Y·2·width + X, c] = x[b, (Y/2)·width + X/2, c]
    /// (integer division), i.e. each pixel repeated 2×2.
    /// y must not overlap x.
    /// </summary>
    void UpsampleNearest2x(View y, View x, int height, int width);

    // ---------------------------------------------------------------- text-encoder ops
    // Token ids arrive as float32 views holding exact integers (every vocabulary fits below 2^24).

    /// <summary>
    /// Row gather: y[i, :] = table[ids[i], :] for every flat row i of y (Batch·Rows rows); ids has one column and
    /// y's Batch and Rows; table is [vocab, y.Cols] in any storage dtype <see cref="UploadWeight"/> returned.
    /// An id that is not a whole number in [0, vocab) is an error (the CPU throws; a GPU kernel writes NaN rows).
    /// </summary>
    void Embedding(View y, View ids, DeviceTensor table);

    /// <summary>
    /// Learned positions: y[b, r, :] = x[b, r, :] + table[r, :] (positions 0..Rows−1, the same for every batch);
    /// table is [positions ≥ Rows, Cols] in any storage dtype. y may alias x.
    /// </summary>
    void AddPositionEmbedding(View y, View x, DeviceTensor table);

    /// <summary>LayerNorm per row with an affine map: (x − mean)/sqrt(var + eps)·scale + bias (bias may be null). y may alias x.</summary>
    void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps);

    /// <summary>y = x·sigmoid(1.702·x) (CLIP's quick_gelu). y may alias x.</summary>
    void QuickGelu(View y, View x);

    /// <summary>y = a·b elementwise (gated feed-forwards). y may alias a.</summary>
    void Multiply(View y, View a, View b);

    /// <summary>
    /// T5's relative position bias for Lq = bias.Rows queries and Lk = bias.Cols keys: bias[h, i, j] =
    /// table[bucket(j − i), h], with bias a [heads, Lq, Lk] view (Batch = heads) and table [buckets, heads].
    /// bucket(rel): bidirectional → n = buckets/2, offset n when rel &gt; 0, a = |rel|; otherwise n = buckets,
    /// offset 0, a = max(−rel, 0). exact = n/2; a &lt; exact → offset + a, else offset + min(n − 1,
    /// exact + ⌊ln(a/exact)/ln(maxDistance/exact)·(n − exact)⌋).
    /// </summary>
    void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional);

    /// <summary>
    /// <see cref="Attention"/> with an additive score bias and/or a causal mask: softmax(q·kᵀ·scale + bias[h] (+ −∞
    /// where key j &gt; query i))·v. bias, when given, is a [heads, q.Rows, k.Rows] view (Batch = heads), the same
    /// for every sample of the batch.
    /// </summary>
    void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal);

    /// <summary>
    /// Per sample b: y[b, 0, :] = x[b, argmax(ids[b, 0, :]), :], the first position of the largest id (CLIP's pooled
    /// output). x is [B, L, C], ids [B, 1, L], y [B, 1, C].
    /// </summary>
    void GatherArgmaxRows(View y, View x, View ids);
}
