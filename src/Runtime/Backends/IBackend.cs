using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// The kernels a compiled model launches. One generated graph runs on every backend: the CPU backend with
/// vectorised, multi-threaded managed code, the CUDA backend with ILGPU kernels and cuBLAS.
/// Every op reads and writes float32 <see cref="View"/>s; an output view may alias an input of the same
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

    /// <summary>Copies float32 host data to the device.</summary>
    DeviceTensor Upload(HostTensor host);

    /// <summary>
    /// Stores a weight. <paramref name="raw"/> holds little-endian elements of <paramref name="dtype"/>.
    /// The backend chooses its storage dtype (the returned tensor's DType): bf16/f16 may stay 16-bit.
    /// </summary>
    DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw);

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
}
