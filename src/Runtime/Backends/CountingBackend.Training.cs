namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// The training ops, counted and timed like the forward ones, so `bench train --profile` shows where a training step
/// spends its time. They need an inner backend with training ops (both of ours have them).
/// </summary>
public sealed partial class CountingBackend : ITrainingBackend
{
    private ITrainingBackend Training => _inner as ITrainingBackend
        ?? throw new NotSupportedException($"the {_inner.Name} backend has no training ops to count");

    public void Gemm(View c, View a, bool transposeA, View b, bool transposeB, float alpha, float beta)
    {
        // c is [M, N] per product, K the inner size; the batches are the larger of a's and b's.
        int k = transposeA ? a.Rows : a.Cols;
        Count(nameof(Gemm), 2.0 * Math.Max(a.Batch, b.Batch) * c.Rows * c.Cols * k);
        Timed(nameof(Gemm), () => Training.Gemm(c, a, transposeA, b, transposeB, alpha, beta));
    }

    public void AttentionBackward(View dq, View dk, View dv, View dOut, View q, View k, View v, int heads, float scale)
    {
        // The recomputed q·kᵀ, then dP = dO·vᵀ, dV = Pᵀ·dO, dQ = dS·k and dK = dSᵀ·q: five products of Lq × Lk × head_dim per head.
        Count(nameof(AttentionBackward), 10.0 * q.Batch * q.Rows * k.Rows * q.Cols);
        Timed(nameof(AttentionBackward), () => Training.AttentionBackward(dq, dk, dv, dOut, q, k, v, heads, scale));
    }

    public void MoveToHost(DeviceTensor tensor) => Timed(nameof(MoveToHost), () => Training.MoveToHost(tensor));
    public void MoveToDevice(DeviceTensor tensor) => Timed(nameof(MoveToDevice), () => Training.MoveToDevice(tensor));
    public void SumRows(View y, View x, float beta) => Timed(nameof(SumRows), () => Training.SumRows(y, x, beta));
    public void LayerNormBackward(View dx, View dy, View x, float eps) => Timed(nameof(LayerNormBackward), () => Training.LayerNormBackward(dx, dy, x, eps));
    public void RmsNormBackward(View dx, View dy, View x, DeviceTensor scale, int groupSize, float eps) =>
        Timed(nameof(RmsNormBackward), () => Training.RmsNormBackward(dx, dy, x, scale, groupSize, eps));
    public void ModulateBackward(View dx, View dShift, View dScale, View dy, View x, View scale) =>
        Timed(nameof(ModulateBackward), () => Training.ModulateBackward(dx, dShift, dScale, dy, x, scale));
    public void GatedResidualBackward(View dx, View dGate, View dy, View x, View gate) =>
        Timed(nameof(GatedResidualBackward), () => Training.GatedResidualBackward(dx, dGate, dy, x, gate));
    public void SiluBackward(View dx, View dy, View x) => Timed(nameof(SiluBackward), () => Training.SiluBackward(dx, dy, x));
    public void GeluTanhBackward(View dx, View dy, View x) => Timed(nameof(GeluTanhBackward), () => Training.GeluTanhBackward(dx, dy, x));
    public void ApplyRopeBackward(View dx, View dy, View pe, int headDim) => Timed(nameof(ApplyRopeBackward), () => Training.ApplyRopeBackward(dx, dy, pe, headDim));

    public void AdamWStep(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, int step,
        float lr, float beta1, float beta2, float eps, float weightDecay) =>
        Timed(nameof(AdamWStep), () => Training.AdamWStep(param, grad, m, v, step, lr, beta1, beta2, eps, weightDecay));

    public double SumOfSquares(params View[] views)
    {
        double sum = 0;
        Timed(nameof(SumOfSquares), () => sum = Training.SumOfSquares(views));
        return sum;
    }

    public void Scale(View x, float factor) => Timed(nameof(Scale), () => Training.Scale(x, factor));
    public void Zero(View x) => Timed(nameof(Zero), () => Training.Zero(x));
}
