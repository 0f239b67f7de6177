using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// Every training op on bf16 activation views against the same op on float32 views of the same (bf16-representable)
/// values, with the result rounded to bf16: bit for bit. Each kernel reads through the same accessor, computes in float32
/// in the same order and rounds once on the store, so any difference is a load or store that skipped it, a stride
/// applied to the wrong element size, or an intermediate kept at the wrong precision. A parameter's gradient (a LoRA
/// factor's, a trained weight's) is float32 in the bf16 pass too and must equal the float32 pass's exactly; float32
/// parameters (LoRA factors, norm scales) and bf16 weights are shared by both passes. Views have offsets and row and
/// batch gaps.
/// </summary>
public sealed class SimulatorBFloat16TrainingOpTests(BFloat16SimulatorFixture fixture) : IClassFixture<BFloat16SimulatorFixture>
{
    private readonly IlgpuBackend backend = fixture.Backend;
    private readonly Random random = new(2025);
    private readonly Dictionary<DeviceTensor, DeviceTensor> twins = new(ReferenceEqualityComparer.Instance);

    public static TheoryData<string> Ops() => new()
    {
        "GemmBFloat16Weight", "GemmLoraFactors", "GemmWeightGradient", "GemmBatchedTransposes", "SumRows",
        "ModulateBackward", "ModulateBackwardAliasingDy", "GatedResidualBackward", "LayerNormBackward", "RmsNormBackward",
        "SiluBackward", "GeluTanhBackward", "ApplyRopeBackward", "AttentionBackward", "AttentionBackwardFusedQkv", "AttentionBackwardInChunks",
        "ScaleZeroAndSumOfSquares",
    };

    [Theory]
    [MemberData(nameof(Ops))]
    public void TrainingOpOnBFloat16ViewsIsTheFloat32OpRounded(string op)
    {
        ITrainingBackend training = backend;
        switch (op)
        {
            case "GemmBFloat16Weight":
            {
                // dx = dy·W and y += x·Wᵀ with a bf16 weight, as a frozen layer's backward and forward run them.
                using var weight = Weight([19, 33], DType.BF16);
                var (dy, dx) = (Activation(2, 5, 19), Activation(2, 5, 33));
                Check(op, on => training.Gemm(on(dx), on(dy), false, View.Of(weight), false, 1f, 0f), dx);
                var (x, y) = (Activation(2, 5, 33), Activation(2, 5, 19));
                Check(op, on => training.Gemm(on(y), on(x), false, View.Of(weight), true, 1f, 1f), y);
                break;
            }
            case "GemmLoraFactors":
            {
                // ApplyLora and LoraBackward: down = x·Aᵀ, y[rows] += s·down·Bᵀ, dB += s·dyᵀ·down, dDown = s·dy·B,
                // dA += dDownᵀ·x, dx += dDown·A; A, B and their gradients float32.
                using var a = Weight([4, 33]);
                using var b = Weight([7, 4]);
                var (x, down) = (Activation(2, 5, 33), Activation(2, 5, 4));
                Check(op + " down", on => training.Gemm(on(down), on(x), false, View.Of(a), true, 1f, 0f), down);
                var (saved, y) = (Activation(2, 5, 4), Activation(2, 5, 19));
                Check(op + " share", on => training.Gemm(on(y).Columns(6, 7), on(saved), false, View.Of(b), true, 2f, 1f), y);
                x = Activation(2, 5, 33);
                var (dy, dDown, dx) = (Activation(2, 5, 19), Activation(2, 5, 4), Activation(2, 5, 33));
                (saved, var givenDown) = (Activation(2, 5, 4), Activation(2, 5, 4));
                var (dA, dB) = (Gradient(4, 33), Gradient(7, 4));
                Check(op + " backward", on =>
                {
                    training.Gemm(on(dB), on(dy).Columns(6, 7), true, on(saved), false, 2f, 1f);
                    training.Gemm(on(dDown), on(dy).Columns(6, 7), false, View.Of(b), false, 2f, 0f);
                    training.Gemm(on(dA), on(givenDown), true, on(x), false, 1f, 1f);
                    training.Gemm(on(dx), on(givenDown), false, View.Of(a), false, 1f, 1f);
                }, dDown, dx, dA, dB);
                break;
            }
            case "GemmWeightGradient":
            {
                // A trained weight's dW += Σ_batch dyᵀ·x (float32) and its bias's db += Σ dy.
                var (dy, x) = (Activation(3, 5, 19), Activation(3, 5, 33));
                var (dW, db) = (Gradient(19, 33), Gradient(1, 19));
                Check(op, on =>
                {
                    training.Gemm(on(dW), on(dy), true, on(x), false, 1f, 1f);
                    training.SumRows(on(db), on(dy), 1f);
                }, dW, db);
                break;
            }
            case "GemmBatchedTransposes":
            {
                foreach (var (transposeA, transposeB) in new[] { (false, false), (true, false), (false, true), (true, true) })
                {
                    var a = transposeA ? Activation(2, 9, 17) : Activation(2, 17, 9);
                    var b = transposeB ? Activation(2, 13, 9) : Activation(2, 9, 13);
                    var c = Activation(2, 17, 13);
                    Check($"{op} tA {transposeA} tB {transposeB}", on => training.Gemm(on(c), on(a), transposeA, on(b), transposeB, 0.75f, -1.5f), c);
                }
                break;
            }
            case "SumRows":
            {
                var x = Activation(2, 5, 17);
                var (perSample, total) = (Activation(2, 1, 17), Gradient(1, 17));
                Check(op, on =>
                {
                    training.SumRows(on(perSample), on(x), 0f);
                    training.SumRows(on(total), on(x), 0.5f);
                }, perSample, total);
                break;
            }
            case "ModulateBackward":
            case "ModulateBackwardAliasingDy":
            {
                var (dy, x, vectors, gradients) = (Activation(2, 5, 17), Activation(2, 5, 17), Activation(1, 2, 34), Activation(1, 2, 34, sliceable: true));
                var dx = op == "ModulateBackward" ? Activation(2, 5, 17) : dy;
                var scale = vectors.Columns(17, 17);
                Check(op, on => training.ModulateBackward(on(dx), on(gradients).Columns(0, 17), on(gradients).Columns(17, 17), on(dy), on(x),
                    on(scale).BroadcastRows(5)), dx, gradients);
                break;
            }
            case "GatedResidualBackward":
            {
                var (dy, x, gate, dGate, dx) = (Activation(2, 5, 17), Activation(2, 5, 17), Activation(1, 2, 17), Activation(1, 2, 17), Activation(2, 5, 17));
                Check(op, on => training.GatedResidualBackward(on(dx), on(dGate), on(dy), on(x), on(gate).BroadcastRows(5)), dx, dGate);
                break;
            }
            case "LayerNormBackward":
            {
                var (x, dy, dx) = (Activation(2, 3, 40, scale: 2f, offset: 3f), Activation(2, 3, 40), Activation(2, 3, 40));
                Check(op, on => training.LayerNormBackward(on(dx), on(dy), on(x), 1e-6f), dx);
                break;
            }
            case "RmsNormBackward":
            {
                using var scale = Weight([16]);
                var (x, dy) = (Activation(2, 3, 32, scale: 2f), Activation(2, 3, 32));
                Check(op, on => training.RmsNormBackward(on(dy), on(dy), on(x), scale, 16, 1e-6f), dy);
                break;
            }
            case "SiluBackward":
            case "GeluTanhBackward":
            {
                var (x, dy, dx) = (Activation(2, 3, 17, scale: 6f), Activation(2, 3, 17), Activation(2, 3, 17));
                Action<View, View, View> backward = op == "SiluBackward" ? training.SiluBackward : training.GeluTanhBackward;
                Check(op, on => backward(on(dx), on(dy), on(x)), dx);
                break;
            }
            case "ApplyRopeBackward":
            {
                var (pe, dy, dx) = (Activation(2, 5, 16), Activation(2, 5, 24), Activation(2, 5, 24));
                Check(op, on => training.ApplyRopeBackward(on(dx), on(dy), on(pe), 8), dx);
                break;
            }
            case "AttentionBackward":
            {
                var (q, kv, dOut) = (Activation(2, 5, 16, scale: 2f), Activation(2, 7, 32, scale: 2f), Activation(2, 5, 16));
                var (dq, dkv) = (Activation(2, 5, 16), Activation(2, 7, 32, sliceable: true));
                Check(op, on => training.AttentionBackward(on(dq), on(dkv).Columns(0, 16), on(dkv).Columns(16, 16), on(dOut),
                    on(q), on(kv).Columns(0, 16), on(kv).Columns(16, 16), 2, 0.35f), dq, dkv);
                break;
            }
            case "AttentionBackwardInChunks":
            {
                // Score scratch for two query rows at a time: three chunks, whose dk and dv sums a bf16 pass keeps in float32.
                var (qkv, dkv, dOut, dq) = (Activation(1, 5, 48, scale: 2f), Activation(1, 5, 32, sliceable: true), Activation(1, 5, 16), Activation(1, 5, 16));
                long budget = backend.AttentionScratchBudgetBytes;
                backend.AttentionScratchBudgetBytes = 2L * 2 * 2 * 5 * sizeof(float);
                try
                {
                    Check(op, on => training.AttentionBackward(on(dq), on(dkv).Columns(0, 16), on(dkv).Columns(16, 16), on(dOut),
                        on(qkv).Columns(0, 16), on(qkv).Columns(16, 16), on(qkv).Columns(32, 16), 2, 0.35f), dq, dkv);
                    Assert.Equal("ilgpu×3", backend.LastAttentionBackwardPath);
                }
                finally
                {
                    backend.AttentionScratchBudgetBytes = budget;
                }
                break;
            }
            case "AttentionBackwardFusedQkv":
            {
                var (qkv, dqkv, dOut) = (Activation(2, 6, 48, scale: 2f), Activation(2, 6, 48, sliceable: true), Activation(2, 6, 16));
                Check(op, on => training.AttentionBackward(on(dqkv).Columns(0, 16), on(dqkv).Columns(16, 16), on(dqkv).Columns(32, 16), on(dOut),
                    on(qkv).Columns(0, 16), on(qkv).Columns(16, 16), on(qkv).Columns(32, 16), 2, 0.35f), dqkv);
                break;
            }
            case "ScaleZeroAndSumOfSquares":
            {
                var (x, y) = (Activation(2, 5, 17, scale: 3f), Activation(2, 5, 17));
                Assert.Equal(training.SumOfSquares(x), training.SumOfSquares(x with { Tensor = twins[x.Tensor] }));
                Check(op, on =>
                {
                    training.Scale(on(x), -0.37f);
                    training.Zero(on(y).Columns(2, 9));
                }, x, y);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op, "no check written for this op");
        }
    }

    // ------------------------------------------------------------------ harness

    /// <summary>
    /// A [batch, rows, cols] activation at an offset with row and batch gaps (sliceable: row gaps only, from element 0, so
    /// that column slices of it are seen as disjoint by the exact overlap rule); its twin holds the same values in bf16.
    /// </summary>
    private View Activation(int batch, int rows, int cols, float scale = 1f, float offset = 0f, bool sliceable = false) =>
        Register(batch, rows, cols, scale, offset, sliceable, backend.AllocateActivation);

    /// <summary>A parameter's gradient [rows, cols]: float32 in both passes (its twin a float32 copy).</summary>
    private View Gradient(int rows, int cols) => Register(1, rows, cols, 1f, 0f, false, backend.Allocate);

    private View Register(int batch, int rows, int cols, float scale, float offset, bool sliceable, Func<int[], DeviceTensor> allocateTwin)
    {
        long rowStride = cols + 3, batchStride = sliceable ? rows * rowStride : rows * rowStride + 5, start = sliceable ? 0 : 7;
        var host = new float[start + batch * batchStride];
        for (int i = 0; i < host.Length; i++)
            host[i] = BFloat16Twins.Value(random, scale, offset);
        var wide = backend.Upload(new HostTensor([host.Length], host));
        var twin = allocateTwin([host.Length]);
        backend.Copy(twin.AsView(), wide.AsView());
        twins[wide] = twin;
        return new View(wide, start, batch, rows, cols, batchStride, rowStride);
    }

    private DeviceTensor Weight(int[] shape, DType dtype = DType.F32) => BFloat16Twins.Weight(backend, random, shape, dtype);

    /// <summary>
    /// Runs <paramref name="op"/> on the float32 views (the argument maps a view to the run's storage) and on their twins,
    /// then requires each output's twin to hold the float32 result, rounded where the twin is bf16.
    /// </summary>
    private void Check(string what, Action<Func<View, View>> op, params View[] outputs)
    {
        View Twin(View view) => view with { Tensor = twins[view.Tensor] };
        try
        {
            op(view => view);
            op(Twin);
            backend.Synchronize();
            foreach (var output in outputs)
            {
                int[] shape = [output.Batch, output.Rows, output.Cols];
                var expected = backend.Download(output, shape).Data;
                var twin = Twin(output);
                var actual = backend.Download(twin, shape).Data;
                BFloat16Twins.RequireRounded($"{what}, {output}", expected, actual, twin.Tensor.DType == DType.BF16);
            }
        }
        finally
        {
            BFloat16Twins.DisposeAll(twins);
        }
    }
}
