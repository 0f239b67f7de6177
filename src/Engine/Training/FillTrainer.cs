using System.Globalization;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;

namespace InFluxEdit.Training;

/// <summary>The settings of a training run (the train command's options, checked).</summary>
public sealed record TrainingSettings(
    EditMethod Method,
    int Steps,
    int Rank,
    double Alpha,
    string Preset,
    bool TrainImgIn,
    string Optimizer,
    double LearningRate,
    ScheduleKind Schedule,
    int WarmupSteps,
    TimestepSampling Sampling,
    double Guidance,
    int Accumulate,
    double MaxGradientNorm,
    long Seed,
    int CheckpointEvery,
    LoraFormat Format,
    LossRegion LossRegion)
{
    /// <summary>Per-block recomputation in the training pass (<see cref="TrainingState.Recompute"/>).</summary>
    public bool Recompute { get; init; }

    /// <summary>Every weight of the transformer trained in full (no adapters): the weights given must be writable copies.</summary>
    public bool Full { get; init; }
}

/// <summary>
/// LoRA training of a FLUX Fill transformer on editing pairs, either method: per step a pair (in a seeded epoch order),
/// σ sampled, x_σ = (1 − σ)·x0 + σ·noise, the prediction against noise − x0 through the generated ForwardBackward,
/// then clipping and the optimizer. Every random draw comes from one <see cref="TrainingRandom"/> in a fixed order,
/// and checkpoints hold its state, the data order and the optimizer, so a resumed run repeats the uninterrupted one.
/// </summary>
public sealed class FillTrainer : IDisposable
{
    /// <summary>A pair's cached training inputs: conditioning, target latent and its caption's text conditioning.</summary>
    public sealed record Example(string Name, HostTensor ImgCond, HostTensor ImgIds, HostTensor X0, float[] TokenWeights, TextConditioning Text);

    private readonly CompiledModel _transformer;
    private readonly IBackend _backend;
    private readonly ITrainingBackend _training;
    private readonly TrainingSettings _settings;
    private readonly IReadOnlyList<Example> _examples;
    private readonly List<TrainableParameter> _parameters;
    private readonly IOptimizer _optimizer;
    private readonly IReadOnlyList<string> _targets;
    private readonly FullWeightTraining? _full;
    private TrainingRandom _random;
    private int[] _order;
    private int _position;

    public FillTrainer(CompiledModel transformer, IReadOnlyDictionary<string, DeviceTensor> weights, TrainingSettings settings,
        IReadOnlyList<Example> examples)
    {
        _transformer = transformer;
        _backend = transformer.Backend;
        _training = _backend as ITrainingBackend
            ?? throw new NotSupportedException($"the {_backend.Name} backend has no training ops: train with --device cpu or --device cuda");
        _settings = settings;
        _examples = examples;
        _random = new TrainingRandom(settings.Seed);

        var model = transformer.Info;
        TrainingState state;
        if (settings.Full)
        {
            _full = new FullWeightTraining(transformer, weights);
            _targets = new List<string>();
            _parameters = _full.Parameters.ToList();
            state = _full.State;
        }
        else
        {
            var targets = LoraTargets.Preset(settings.Preset, model);
            _targets = targets.Select(t => t.Module.Name).ToList();
            _parameters = LoraInit.Create(_backend, targets, settings.Rank, LoraInit.KindOf(settings.Preset, model), _random);
            state = LoraInit.Attach(targets, _parameters, (float)(settings.Alpha / settings.Rank));
        }
        if (settings.TrainImgIn && !settings.Full)
            foreach (string key in new[] { "img_in.weight", "img_in.bias" })
            {
                if (!weights.TryGetValue(key, out var weight))
                    throw new ArgumentException($"--train-img-in: {model.Name} has no '{key}'");
                if (weight.DType != DType.F32)
                    throw new NotSupportedException($"--train-img-in needs float32 weights on the device; '{key}' is {weight.DType}");
                var gradient = TensorTransfer.Zeros(_backend, weight.Shape);
                state.WeightGradients[key] = gradient;
                _parameters.Add(new TrainableParameter(key, weight, gradient));
            }
        state.Recompute = settings.Recompute;
        transformer.Training = state;
        _optimizer = settings.Optimizer switch
        {
            "adamw" => new AdamW(_training),
            "prodigy" => new Prodigy(_backend),
            _ => throw new ArgumentException($"--optimizer must be adamw or prodigy, not '{settings.Optimizer}'"),
        };
        _order = NewOrder();
        _schedule = new LearningRateSchedule(settings.Schedule, settings.LearningRate, settings.WarmupSteps, settings.Steps);
    }

    private readonly LearningRateSchedule _schedule;

    public int Step { get; private set; }
    public IReadOnlyList<TrainableParameter> Parameters => _parameters;
    public IReadOnlyList<string> Targets => _targets;

    private int[] NewOrder()
    {
        var order = Enumerable.Range(0, _examples.Count).ToArray();
        _random.Shuffle(order);
        _position = 0;
        return order;
    }

    private Example NextExample()
    {
        if (_position == _order.Length) _order = NewOrder();
        return _examples[_order[_position++]];
    }

    /// <summary>One optimizer step (over <see cref="TrainingSettings.Accumulate"/> examples); returns the mean loss, or NaN when skipped.</summary>
    public double TrainStep(NonFiniteGuard guard)
    {
        foreach (var p in _parameters) _training.Scale(p.Gradient, 0f);
        double loss = 0;
        for (int micro = 0; micro < _settings.Accumulate; micro++)
            loss += ForwardBackward(NextExample()) / _settings.Accumulate;
        if (_settings.Accumulate > 1)
            foreach (var p in _parameters) _training.Scale(p.Gradient, 1f / _settings.Accumulate);
        double norm = Gradients.GlobalNorm(_training, _parameters);
        Step++;
        if (guard.Check(Step, loss, norm) == NonFiniteDecision.Skip) return double.NaN;
        if (_settings.MaxGradientNorm > 0) Gradients.ClipGlobalNorm(_training, _parameters, _settings.MaxGradientNorm);
        _optimizer.Step(_parameters, _schedule.At(Step - 1));
        return loss;
    }

    /// <summary>
    /// The loss over every example at a fixed σ and noise from its own seed: a measure of progress that the training
    /// draws do not move, so it falls only if the adapters learned.
    /// </summary>
    public double Evaluate(double sigma, long noiseSeed)
    {
        var random = new TrainingRandom(noiseSeed);
        double total = 0;
        foreach (var example in _examples)
        {
            var noise = new HostTensor((int[])example.X0.Shape.Clone());
            random.FillGaussian(noise.Data);
            var inputs = Inputs(example, FlowMatching.Interpolate(example.X0, noise, sigma), sigma);
            try
            {
                var output = _transformer.Run(inputs)["out"];
                var prediction = _backend.Download(output, output.Shape);
                output.Dispose();
                total += FlowMatching.WeightedMse(prediction, FlowMatching.VelocityTarget(example.X0, noise), example.TokenWeights);
            }
            finally
            {
                foreach (var t in inputs.Values) t.Dispose();
            }
        }
        return total / _examples.Count;
    }

    private Dictionary<string, DeviceTensor> Inputs(Example example, HostTensor noisy, double sigma) => new()
    {
        ["img"] = _backend.Upload(LatentPacking.ConcatFeatures(noisy, example.ImgCond)),
        ["img_ids"] = _backend.Upload(example.ImgIds),
        ["txt"] = _backend.Upload(example.Text.Txt),
        ["txt_ids"] = _backend.Upload(new HostTensor(1, example.Text.Txt.Shape[1], 3)),
        ["timesteps"] = _backend.Upload(new HostTensor(new[] { 1 }, new[] { (float)sigma })),
        ["y"] = _backend.Upload(example.Text.Vec),
        ["guidance"] = _backend.Upload(new HostTensor(new[] { 1 }, new[] { (float)_settings.Guidance })),
    };

    private double ForwardBackward(Example example)
    {
        double sigma = FlowMatching.SampleSigma(_random, _settings.Sampling);
        var noise = new HostTensor((int[])example.X0.Shape.Clone());
        _random.FillGaussian(noise.Data);
        var noisy = FlowMatching.Interpolate(example.X0, noise, sigma);
        var target = FlowMatching.VelocityTarget(example.X0, noise);
        var inputs = Inputs(example, noisy, sigma);
        double loss = double.NaN;
        try
        {
            _transformer.ForwardBackward(inputs, output =>
            {
                var prediction = _backend.Download(output, output.Shape);
                loss = FlowMatching.WeightedMse(prediction, target, example.TokenWeights);
                return _backend.Upload(WeightedMseGradient(prediction, target, example.TokenWeights));
            });
        }
        finally
        {
            foreach (var t in inputs.Values) t.Dispose();
        }
        return loss;
    }

    /// <summary>d/dprediction of the token-weighted mean squared error (weights normalised as WeightedMse does).</summary>
    private static HostTensor WeightedMseGradient(HostTensor prediction, HostTensor target, float[] tokenWeights)
    {
        int tokens = tokenWeights.Length, features = prediction.Data.Length / tokens;
        double weightSum = tokenWeights.Sum(w => (double)w) * features;
        var gradient = new HostTensor((int[])prediction.Shape.Clone());
        for (int i = 0; i < prediction.Data.Length; i++)
            gradient.Data[i] = (float)(2 * tokenWeights[i / features] * ((double)prediction.Data[i] - target.Data[i]) / weightSum);
        return gradient;
    }

    public TrainingCheckpointInfo CheckpointInfo(string baseModel) =>
        new(Step, _settings.Seed, _random.SaveState(), TrainingCheckpointInfo.FormatOrder(_order), _settings.Method.ToString().ToLowerInvariant(),
            _settings.Rank, _settings.Alpha, _targets, baseModel)
        {
            Extra = new Dictionary<string, string> { ["position"] = _position.ToString(CultureInfo.InvariantCulture) },
        };

    public void SaveCheckpoint(string path, string baseModel) =>
        TrainingCheckpoint.Save(path, _backend, _parameters, _optimizer, CheckpointInfo(baseModel));

    /// <summary>Continues from a checkpoint: parameters, optimizer, step, random state and the place in the data order.</summary>
    public void Resume(string path)
    {
        var checkpoint = TrainingCheckpoint.Load(path);
        var info = checkpoint.Info;
        if (info.Rank != _settings.Rank || info.Method != _settings.Method.ToString().ToLowerInvariant() || !info.Targets.SequenceEqual(_targets))
            throw new InvalidDataException(
                $"{path} was trained with method {info.Method}, rank {info.Rank} and {info.Targets.Count} targets; this run has " +
                $"{_settings.Method.ToString().ToLowerInvariant()}, rank {_settings.Rank} and {_targets.Count}: resume with the same settings");
        checkpoint.Restore(_backend, _parameters, _optimizer);
        Step = info.Step;
        _random = TrainingRandom.RestoreState(info.RandomState);
        _order = TrainingCheckpointInfo.ParseOrder(info.DataOrder);
        if (_order.Length != _examples.Count || _order.Any(i => i < 0 || i >= _examples.Count)
            || !info.Extra.TryGetValue("position", out var position) || !int.TryParse(position, CultureInfo.InvariantCulture, out _position)
            || _position < 0 || _position > _order.Length)
            throw new InvalidDataException($"{path} holds a data order over {_order.Length} pairs (or a damaged one); this run has {_examples.Count}: resume with the same --data");
    }

    /// <summary>The trained tensors under their training names, for LoraWriter.</summary>
    public IReadOnlyDictionary<string, HostTensor> Trained() =>
        _parameters.ToDictionary(p => p.Name, p => TensorTransfer.Download(_backend, p.Value));

    public void Dispose()
    {
        _optimizer.Dispose();
        _transformer.Training = null;
        if (_full != null)
        {
            // The weights belong to the caller; only the gradients are the trainer's.
            _full.Dispose();
            return;
        }
        foreach (var p in _parameters)
        {
            p.Gradient.Dispose();
            if (!p.Name.EndsWith(".weight", StringComparison.Ordinal) && !p.Name.EndsWith(".bias", StringComparison.Ordinal)) p.Value.Dispose();
        }
    }
}
