namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// What LoRA training adds to <see cref="IBackend"/>: a general product for the gradients of linear layers and adapters,
/// the backward of every forward op the FLUX transformer runs, reductions, and the AdamW step.
/// Each backward is the exact derivative of the <see cref="IBackend"/> op of the same name and takes the inputs that
/// forward read again (the forward output is never needed). Activation gradients are assigned; parameter gradients
/// accumulate through <see cref="Gemm"/>'s beta or <see cref="SumRows"/>'s beta; the gradient of a residual input
/// passes through unchanged and stays with the caller. Per-sample vector gradients (modulation shift, scale, gate) are
/// [1, B, C] views, one row per sample, assigned. Views are float32 [Batch, Rows, Cols] with unit column stride, as in
/// <see cref="IBackend"/>; an output may alias an input only where the op says so.
/// </summary>
public interface ITrainingBackend : IBackend
{
    /// <summary>
    /// c = alpha·op(a)·op(b) + beta·c per batch, where op(a) is a ([M, K]) or, with <paramref name="transposeA"/>,
    /// aᵀ (a stored [K, M]); op(b) is b ([K, N]) or, with <paramref name="transposeB"/>, bᵀ (b stored [N, K]); c is [M, N].
    /// A weight [out, in] is passed as View.Of(weight): dx = dy·W is (dx, dy, false, W, false),
    /// dW += dyᵀ·x is (dW, dy, true, x, false, 1, 1), y = x·Wᵀ is (y, x, false, W, true).
    /// Batches: a and b have the same Batch, or one of them has Batch 1 and is reused for every batch (a Batch with
    /// BatchStride 0 works the same). c has that Batch (one product per batch) or Batch 1, and then the products of all
    /// batches are summed into it: c = alpha·Σ_b op(a_b)·op(b_b) + beta·c, a weight gradient over a batch.
    /// With beta = 0, c is not read (NaN there does not survive); with alpha = 0 or K = 0, a and b are not read.
    /// c must not overlap a or b.
    /// </summary>
    void Gemm(View c, View a, bool transposeA, View b, bool transposeB, float alpha, float beta);

    /// <summary>
    /// y[b, 0, c] = Σ_r x[b, r, c] + beta·y[b, 0, c]: y is [x.Batch, 1, x.Cols], or [1, 1, x.Cols] to sum the rows of
    /// every batch (a bias gradient). With beta = 0, y is not read.
    /// </summary>
    void SumRows(View y, View x, float beta);

    /// <summary>
    /// dx = ∂/∂x of <see cref="IBackend.LayerNorm"/>, per row: rstd·(dy − mean(dy) − x̂·mean(dy·x̂)) with x̂ and rstd
    /// recomputed from x. Assigns dx; dx may alias dy.
    /// </summary>
    void LayerNormBackward(View dx, View dy, View x, float eps);

    /// <summary>
    /// dx = ∂/∂x of <see cref="IBackend.RmsNorm"/> with the scale frozen (no scale gradient), per group of
    /// <paramref name="groupSize"/> columns: r·g − x·r³·mean(g·x), g = dy·scale, r = rsqrt(mean(x²) + eps).
    /// Assigns dx; dx may alias dy.
    /// </summary>
    void RmsNormBackward(View dx, View dy, View x, DeviceTensor scale, int groupSize, float eps);

    /// <summary>
    /// Backward of <see cref="IBackend.Modulate"/> y = (1 + scale)·x + shift where shift and scale are per-sample vectors
    /// broadcast over the rows of each batch. <paramref name="scale"/> is the x-shaped view the forward read (rows of
    /// stride 0). Assigns dx = dy·(1 + scale), dShift[0, b, :] = Σ_r dy[b, r, :] and dScale[0, b, :] = Σ_r dy·x; dShift
    /// and dScale are [1, x.Batch, x.Cols]. dx may alias dy or x.
    /// </summary>
    void ModulateBackward(View dx, View dShift, View dScale, View dy, View x, View scale);

    /// <summary>
    /// Backward of <see cref="IBackend.GatedResidual"/> y = residual + gate·x with a per-sample gate broadcast over rows
    /// (<paramref name="gate"/> is the x-shaped view the forward read). Assigns dx = dy·gate and
    /// dGate[0, b, :] = Σ_r dy[b, r, :]·x[b, r, :] ([1, x.Batch, x.Cols]). The residual's gradient is dy itself and is
    /// not written. dx may alias x or dy (aliasing dy overwrites the residual's gradient).
    /// </summary>
    void GatedResidualBackward(View dx, View dGate, View dy, View x, View gate);

    /// <summary>dx = dy·σ(x)·(1 + x·(1 − σ(x))), the derivative of <see cref="IBackend.Silu"/>. dx may alias dy.</summary>
    void SiluBackward(View dx, View dy, View x);

    /// <summary>
    /// dx = dy·(σ(z) + x·σ(z)·(1 − σ(z))·z'), z = 2√(2/π)(x + 0.044715x³), the derivative of
    /// <see cref="IBackend.GeluTanh"/> (0.5x(1 + tanh(z/2)) = x·σ(z)). dx may alias dy.
    /// </summary>
    void GeluTanhBackward(View dx, View dy, View x);

    /// <summary>
    /// dx = Mᵀ·dy per interleaved pair of every head, with M the 2×2 matrix of <see cref="IBackend.ApplyRope"/>'s pe
    /// row (a rotation, so Mᵀ rotates back). dx may alias dy.
    /// </summary>
    void ApplyRopeBackward(View dx, View dy, View pe, int headDim);

    /// <summary>
    /// Gradients of <see cref="IBackend.Attention"/> o = softmax(q·kᵀ·scale)·v with respect to q, k and v, given dOut
    /// (o's shape). The softmax is recomputed per (batch, head, block of query rows), so memory stays one score block
    /// per thread whatever the length. Assigns dq (q's shape), dk (k's shape) and dv (v's shape); q and dq have the
    /// query rows, k, v, dk and dv the key rows, which may differ. dq, dk and dv may be disjoint column slices of one
    /// tensor but must not overlap each other or the inputs.
    /// </summary>
    void AttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale);

    /// <summary>
    /// One torch.optim.AdamW step (amsgrad off, maximize off) on float32 tensors of equal length, in place on param, m, v:
    /// param ·= 1 − lr·weightDecay; m = lerp(m, grad, 1 − beta1); v = beta2·v + (1 − beta2)·grad²;
    /// param −= lr/(1 − beta1^step) · m / (√v / √(1 − beta2^step) + eps). <paramref name="step"/> counts from 1.
    /// </summary>
    void AdamWStep(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, int step,
        float lr, float beta1, float beta2, float eps, float weightDecay);

    /// <summary>
    /// Σ x² over all the views, accumulated in float64 (for gradient-norm clipping: every gradient at once, so a GPU
    /// returns one figure per step, not one per tensor); NaN and ±Inf propagate.
    /// </summary>
    double SumOfSquares(params View[] views);

    /// <summary>
    /// Moves an activation's contents to host memory and gives its device memory back, for a value that waits long for
    /// its next read: a block boundary a recomputing pass keeps for the backward (<see cref="Models.TrainingState.OffloadCheckpoints"/>).
    /// Reading it before <see cref="MoveToDevice"/> is an error; disposing it frees the host copy. The copy is ordered
    /// with the ops before and after it, so no wait is needed. A backend whose tensors are host memory keeps it in place.
    /// </summary>
    void MoveToHost(DeviceTensor tensor);

    /// <summary>Brings back a tensor <see cref="MoveToHost"/> moved (no effect on one that was not moved), ordered before the ops after it.</summary>
    void MoveToDevice(DeviceTensor tensor);

    /// <summary>x ·= factor in place (gradient clipping, loss scaling).</summary>
    void Scale(View x, float factor);

    /// <summary>x = 0, whatever x held (NaN included): gradient buffers that several ops add into.</summary>
    void Zero(View x);
}

/// <summary>
/// What training every weight adds to <see cref="ITrainingBackend"/>: the gradients of norm scales and the autoencoder's
/// ops (convolutions, group norms, upsampling). Parameter gradients accumulate (+=) over every row and batch; activation
/// gradients are assigned. LoRA training never needs these, so a backend may train LoRAs without them.
/// </summary>
public interface IFullTrainingBackend : ITrainingBackend
{

    /// <summary>
    /// The scale's gradient of <see cref="IBackend.RmsNorm"/>: dScale[j] += Σ over rows and groups of dy·x·r at column
    /// j of each group, r = rsqrt(mean(x²) + eps) of that group. dScale has <paramref name="groupSize"/> elements.
    /// </summary>
    void RmsNormScaleBackward(DeviceTensor dScale, View dy, View x, int groupSize, float eps);

    /// <summary>
    /// dx = ∂/∂x of <see cref="IBackend.Conv2d"/> (the transposed convolution of dy), assigned; x's geometry is
    /// <paramref name="height"/>×<paramref name="width"/> as in the forward, dy is the forward's y shape. dx must not
    /// overlap dy.
    /// </summary>
    void Conv2dBackwardInput(View dx, View dy, int height, int width, DeviceTensor weight, int stride, Padding2d padding);

    /// <summary>
    /// dWeight += ∂/∂weight of <see cref="IBackend.Conv2d"/> summed over the batch, in PyTorch's [Cout, Cin, kh, kw]
    /// layout (the bias gradient is <see cref="SumRows"/> of dy).
    /// </summary>
    void Conv2dBackwardWeight(DeviceTensor dWeight, View dy, View x, int height, int width, int stride, Padding2d padding);

    /// <summary>
    /// Backward of <see cref="IBackend.GroupNorm"/> (channels-last images [B, H·W, C]), the statistics recomputed from
    /// x: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) per (sample, group) with g = dy·scale (scale 1 when null), assigned
    /// when <paramref name="dx"/> is given; dScale[c] += Σ dy·x̂ and dBias[c] += Σ dy over every pixel and sample when
    /// given. dx may alias dy.
    /// </summary>
    void GroupNormBackward(View? dx, DeviceTensor? dScale, DeviceTensor? dBias, View dy, View x, int groups, DeviceTensor? scale, float eps);

    /// <summary>
    /// dx = ∂/∂x of <see cref="IBackend.UpsampleNearest2x"/>: each input pixel gets the sum of its four output pixels'
    /// dy, assigned; dx is [B, height·width, C], dy [B, 2height·2width, C].
    /// </summary>
    void UpsampleNearest2xBackward(View dx, View dy, int height, int width);
}
