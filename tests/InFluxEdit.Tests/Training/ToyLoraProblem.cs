using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// A stand-in for the generated loss-and-gradients call: one adapter ΔW = B·A learns a fixed low-rank map on random
/// inputs drawn from the run's TrainingRandom (mean squared error, gradients by plain loops). Small enough to run
/// many steps in a test, and it uses the random stream the way a real run does, so resume can be checked exactly.
/// </summary>
internal sealed class ToyLoraProblem : IDisposable
{
    public const int In = 6, Out = 5, Rank = 2, Samples = 16;
    private readonly double[] _goal; // [Out, In]

    public ToyLoraProblem(long seed, Func<ITrainingBackend, IOptimizer> optimizer, LearningRateSchedule schedule)
    {
        Backend = new CpuBackend();
        Random = new TrainingRandom(seed);
        var target = new LoraTarget(new LoraModule("toy", null), 0, Out, Out, In);
        Parameters = LoraInit.Create(Backend, [target], Rank, LoraInitKind.KaimingUniform, Random);
        var goalRandom = new TrainingRandom(99);
        // A rank-Rank goal, so the adapter can represent it exactly and the loss can fall towards 0.
        double[] u = Enumerable.Range(0, Out * Rank).Select(_ => goalRandom.NextGaussian()).ToArray();
        double[] v = Enumerable.Range(0, Rank * In).Select(_ => goalRandom.NextGaussian()).ToArray();
        _goal = new double[Out * In];
        for (int o = 0; o < Out; o++)
            for (int i = 0; i < In; i++)
                for (int r = 0; r < Rank; r++) _goal[o * In + i] += u[o * Rank + r] * v[r * In + i];
        Optimizer = optimizer(Backend);
        Schedule = schedule;
    }

    public CpuBackend Backend { get; }
    public TrainingRandom Random { get; set; }
    public List<TrainableParameter> Parameters { get; }
    public IOptimizer Optimizer { get; }
    public LearningRateSchedule Schedule { get; }

    /// <summary>One optimiser step (0-based index); returns the loss before the update.</summary>
    public double Step(int step)
    {
        var x = new float[Samples * In];
        Random.FillGaussian(x);
        // The timestep is one input feature, as the real model sees it, so the stream of draws matches a real run's.
        for (int n = 0; n < Samples; n++) x[n * In] = (float)FlowMatching.SampleSigma(Random, TimestepSampling.Uniform);
        float[] a = TensorTransfer.Download(Backend, Parameters[0].Value).Data, b = TensorTransfer.Download(Backend, Parameters[1].Value).Data;
        var gradA = new float[a.Length];
        var gradB = new float[b.Length];
        double loss = 0;
        for (int n = 0; n < Samples; n++)
        {
            var h = new double[Rank];
            for (int r = 0; r < Rank; r++)
                for (int i = 0; i < In; i++) h[r] += a[r * In + i] * x[n * In + i];
            var dh = new double[Rank];
            for (int o = 0; o < Out; o++)
            {
                double prediction = 0, wanted = 0;
                for (int r = 0; r < Rank; r++) prediction += b[o * Rank + r] * h[r];
                for (int i = 0; i < In; i++) wanted += _goal[o * In + i] * x[n * In + i];
                double error = prediction - wanted;
                loss += error * error / (Samples * Out);
                double dPrediction = 2 * error / (Samples * Out);
                for (int r = 0; r < Rank; r++)
                {
                    gradB[o * Rank + r] += (float)(dPrediction * h[r]);
                    dh[r] += dPrediction * b[o * Rank + r];
                }
            }
            for (int r = 0; r < Rank; r++)
                for (int i = 0; i < In; i++) gradA[r * In + i] += (float)(dh[r] * x[n * In + i]);
        }
        TensorTransfer.Overwrite(Backend, Parameters[0].Gradient, new HostTensor([Rank, In], gradA));
        TensorTransfer.Overwrite(Backend, Parameters[1].Gradient, new HostTensor([Out, Rank], gradB));
        Gradients.ClipGlobalNorm(Backend, Parameters, 1.0);
        Optimizer.Step(Parameters, Schedule.At(step));
        return loss;
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        foreach (var p in Parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
        Backend.Dispose();
    }
}
