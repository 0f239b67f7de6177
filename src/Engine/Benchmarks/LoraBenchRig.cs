using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Benchmarks;

/// <summary>
/// What the training benchmarks time: a compiled model on seeded random weights (at the settings' base precision),
/// its benchmark inputs, LoRA adapters of the settings' preset and rank, and AdamW. The adapters are not attached
/// until a caller sets <c>Model.Training = State</c>, so the plain forward can be timed first.
/// </summary>
internal sealed class LoraBenchRig : IDisposable
{
    /// <param name="weights">The model's weights on the backend; null: seeded random ones at the settings' base precision.</param>
    public LoraBenchRig(BenchSettings settings, IBackend backend, int seed, IProgress<StageProgress>? progress,
        Func<ModelDescriptor, IReadOnlyDictionary<string, DeviceTensor>>? weights = null)
    {
        Info = Benchmarks.Compiled(settings.Model);
        Backend = backend;
        Training = backend as ITrainingBackend
            ?? throw new NotSupportedException($"the {backend.Name} backend has no training ops: bench train runs with --device cpu or --device cuda");
        Weights = weights?.Invoke(Info.Descriptor)
            ?? RandomWeights.Upload(Info.Descriptor, backend, seed, StageProgress.Of(progress, "random weights", "tensors"), settings.BasePrecision);
        Model = Info.Create(backend, Weights);
        Inputs = BenchInputs.Create(Info.Descriptor, settings.Batch, settings.ImageTokens, settings.TextTokens)
            .ToDictionary(p => p.Key, p => backend.Upload(p.Value));
        Targets = LoraTargets.Preset(settings.Preset, Info.Descriptor);
        Parameters = LoraInit.Create(backend, Targets, settings.Rank, LoraInit.KindOf(settings.Preset, Info.Descriptor), new TrainingRandom(seed));
        State = LoraInit.Attach(Targets, Parameters, Scale);
        Optimizer = new AdamW(Training);
    }

    /// <summary>The adapters' output scale (alpha / rank with the schemas' alpha = rank).</summary>
    public const float Scale = 1f;

    public CompiledModelInfo Info { get; }
    public IBackend Backend { get; }
    public ITrainingBackend Training { get; }
    public IReadOnlyDictionary<string, DeviceTensor> Weights { get; }
    public CompiledModel Model { get; }
    public IReadOnlyDictionary<string, DeviceTensor> Inputs { get; }
    public IReadOnlyList<LoraTarget> Targets { get; }
    public IReadOnlyList<TrainableParameter> Parameters { get; }
    public TrainingState State { get; }
    public AdamW Optimizer { get; }

    /// <summary>
    /// One training step with the adapters attached: fresh gradients, forward and backward (a zero output gradient:
    /// the work, not the loss, is what is timed), <paramref name="beforeOptimizer"/>, AdamW, then a wait for the
    /// device so that a timer measures whole steps, not their queueing.
    /// </summary>
    public void Step(Action? beforeOptimizer = null)
    {
        foreach (var p in Parameters) Training.Scale(p.Gradient, 0f);
        Model.ForwardBackward(Inputs, output => Backend.Upload(new HostTensor(output.Shape)));
        beforeOptimizer?.Invoke();
        Optimizer.Step(Parameters, AdamW.DefaultLearningRate);
        Backend.Synchronize();
    }

    public void Dispose()
    {
        Model.Training = null;
        Optimizer.Dispose();
        foreach (var p in Parameters) { p.Value.Dispose(); p.Gradient.Dispose(); }
        foreach (var t in Inputs.Values) t.Dispose();
        foreach (var w in Weights.Values) w.Dispose();
    }
}
