using System.Globalization;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Distributed;
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
    OptimizerSettings Optimizer,
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

    /// <summary>Block boundaries in host memory between their forward and backward (<see cref="TrainingState.OffloadCheckpoints"/>).</summary>
    public bool OffloadCheckpoints { get; init; }

    /// <summary>Every weight of the transformer trained in full (no adapters): the weights given must be writable copies.</summary>
    public bool Full { get; init; }

    /// <summary>
    /// Examples in one batch (all of one bucket); <see cref="Accumulate"/> counts such batches. Across ranks it is the
    /// global batch, split among them, so the run's result does not depend on how many ranks share it.
    /// </summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Restarts of a cosine-with-restarts schedule and the exponent of a polynomial one.</summary>
    public int ScheduleCycles { get; init; } = 1;
    public double SchedulePower { get; init; } = 1.0;

    /// <summary>The logit-normal sampling's mean and standard deviation, and the mode sampling's scale.</summary>
    public double LogitMean { get; init; }
    public double LogitStd { get; init; } = 1.0;
    public double ModeScale { get; init; } = FlowMatching.ModeScale;

    public LossWeighting LossWeighting { get; init; } = LossWeighting.None;

    /// <summary>See <see cref="TrainRequest.SeedFrozenImgIn"/>.</summary>
    public bool SeedFrozenImgIn { get; init; }

    /// <summary>Concat: each example masks its diptych's left or right half at random (the seed's default), not always the right.</summary>
    public bool BothSides { get; init; }

    /// <summary>
    /// The resolutions the trainer's example lists were cached at, one list each, recorded in checkpoints so that a
    /// resume at other sizes is refused; null where the caller built the examples itself.
    /// </summary>
    public TrainingResolutions? Resolution { get; init; }
}

/// <summary>
/// LoRA training of a FLUX Fill transformer on editing pairs, either method: per step <see cref="TrainingSettings.Accumulate"/>
/// batches of up to <see cref="TrainingSettings.BatchSize"/> pairs of one bucket (in a seeded epoch order; with several
/// resolutions each batch at one drawn uniformly, as the seed's collate_fn draws one per batch), per pair σ
/// sampled and x_σ = (1 − σ)·x0 + σ·noise, the batch's predictions against noise − x0 through one generated
/// ForwardBackward (the loss is the mean over the batch, the step's gradient the mean over its batches, as diffusers
/// computes them), then clipping and the optimizer. Every random draw comes from one <see cref="TrainingRandom"/> in a fixed order,
/// and checkpoints hold its state, the data order and the optimizer, so a resumed run repeats the uninterrupted one.
/// Data parallel over a <see cref="IProcessGroup"/>: every rank draws the whole batch's σ and noise from the one stream
/// and runs only its share of the examples; the shares' gradients and losses are summed over the ranks before the norm,
/// clipping and the optimizer, which then step alike everywhere.
/// </summary>
public sealed class FillTrainer : IDisposable
{
    /// <summary>A pair's cached training inputs: conditioning, target latent and its caption's text conditioning.</summary>
    public sealed record Example(string Name, HostTensor ImgCond, HostTensor ImgIds, HostTensor X0, float[] TokenWeights, TextConditioning Text)
    {
        /// <summary>Concat with <see cref="TrainingSettings.BothSides"/>: the conditioning with the diptych's other half masked, and its token weights.</summary>
        public (HostTensor ImgCond, float[] TokenWeights)? Reversed { get; init; }
    }

    private readonly CompiledModel _transformer;
    private readonly IBackend _backend;
    private readonly ITrainingBackend _training;
    private readonly TrainingSettings _settings;
    // The pairs at each training resolution (the same pairs in the same order in every list), and all of them in one list.
    private readonly IReadOnlyList<IReadOnlyList<Example>> _atResolution;
    private readonly IReadOnlyList<Example> _examples;
    private readonly List<TrainableParameter> _parameters;
    private readonly IOptimizer _optimizer;
    private readonly IReadOnlyList<string> _targets;
    private readonly FullWeightTraining? _full;
    private readonly IProcessGroup _group;
    private readonly IGradientExchange? _exchange;
    // The seed's img_in gradients: summed over every step since the start (scaled by each clipping), never applied.
    private readonly List<TrainableParameter> _seedFrozen = new();
    // Whose gradients enter the norm, the clipping and the exchange: the trained tensors and the seed's frozen img_in
    // (the seed's clip_grad_norm_ runs over every transformer parameter with a gradient).
    private readonly IReadOnlyList<TrainableParameter> _withGradients;
    private TrainingRandom _random;
    private int[] _order;
    private int _position;

    /// <param name="examples">The pairs at each training resolution: one list per resolution, each of the same pairs in the same order.</param>
    /// <param name="group">The ranks sharing each batch (default: this process alone).</param>
    public FillTrainer(CompiledModel transformer, IReadOnlyDictionary<string, DeviceTensor> weights, TrainingSettings settings,
        IReadOnlyList<IReadOnlyList<Example>> examples, IProcessGroup? group = null)
    {
        if (examples.Count == 0 || examples.Any(list => !list.Select(e => e.Name).SequenceEqual(examples[0].Select(e => e.Name))))
            throw new ArgumentException("the trainer needs one list of examples per resolution, each of the same pairs in the same order");
        if (settings.Resolution != null && settings.Resolution.Sizes.Count != examples.Count)
            throw new ArgumentException($"{examples.Count} lists of examples for the {settings.Resolution.Sizes.Count} resolutions {settings.Resolution}");
        _group = group ?? SingleProcess.Instance;
        _exchange = _group.Size > 1 ? GradientExchange.Create(_group, transformer.Backend, note => Notes.Add(note)) : null;
        _transformer = transformer;
        _backend = transformer.Backend;
        _training = _backend as ITrainingBackend
            ?? throw new NotSupportedException($"the {_backend.Name} backend has no training ops: train with --device cpu or --device cuda");
        _settings = settings;
        _atResolution = examples;
        _examples = examples.SelectMany(list => list).ToList();
        if (settings.BothSides && _examples.FirstOrDefault(e => e.Reversed == null) is { } oneSided)
            throw new ArgumentException($"--mask-side both needs each pair's reversed diptych; '{oneSided.Name}' has none (concat only)");
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
        if (settings.TrainImgIn && settings.SeedFrozenImgIn)
            throw new ArgumentException("--train-img-in trains img_in; the seed's frozen img_in leaves it untrained: give one of them");
        if ((settings.TrainImgIn || settings.SeedFrozenImgIn) && !settings.Full)
            foreach (string key in new[] { "img_in.weight", "img_in.bias" })
            {
                if (!weights.TryGetValue(key, out var weight))
                    throw new ArgumentException($"--train-img-in: {model.Name} has no '{key}'");
                if (weight.DType != DType.F32)
                    throw new NotSupportedException($"--train-img-in needs float32 weights on the device; '{key}' is {weight.DType}");
                var gradient = TensorTransfer.Zeros(_backend, weight.Shape);
                state.WeightGradients[key] = gradient;
                (settings.SeedFrozenImgIn ? _seedFrozen : _parameters).Add(new TrainableParameter(key, weight, gradient));
            }
        _withGradients = _seedFrozen.Count == 0 ? _parameters : [.. _parameters, .. _seedFrozen];
        state.Recompute = settings.Recompute;
        state.OffloadCheckpoints = settings.OffloadCheckpoints;
        transformer.Training = state;
        _optimizer = settings.Optimizer.Create(_training);
        _order = NewOrder();
        _schedule = new LearningRateSchedule(settings.Schedule, settings.LearningRate, settings.WarmupSteps, settings.Steps)
        {
            Cycles = settings.ScheduleCycles,
            Power = settings.SchedulePower,
        };
    }

    private readonly LearningRateSchedule _schedule;

    public int Step { get; private set; }
    public IReadOnlyList<TrainableParameter> Parameters => _parameters;
    public IReadOnlyList<string> Targets => _targets;

    /// <summary>What sums the gradients over the ranks (null in one process), and anything worth saying about the choice.</summary>
    public string? Exchange => _exchange?.Description;
    public List<string> Notes { get; } = new();

    /// <summary>Seconds this rank spent summing gradients over the ranks (the all-reduce and its staging), in all.</summary>
    public double ExchangeSeconds { get; private set; }

    /// <summary>
    /// The epoch's order of the pairs: a seeded shuffle. With batches, each bucket's pairs (in shuffled order) are cut
    /// into batches, placed where their first pair fell, so batches are consecutive runs of one bucket and a dataset of
    /// one bucket keeps the plain shuffle. With several resolutions a pair's bucket is its buckets at all of them, so a
    /// run is one bucket whichever resolution its batch draws. No extra random draws: the stream stays the same at
    /// every batch size.
    /// </summary>
    private int[] NewOrder()
    {
        var order = Enumerable.Range(0, _atResolution[0].Count).ToArray();
        _random.Shuffle(order);
        _position = 0;
        if (_settings.BatchSize == 1) return order;
        return order.Select((example, place) => (example, place))
            .GroupBy(e => string.Join(" | ", _atResolution.Select(list => BucketOf(list[e.example]))))
            .SelectMany(bucket => bucket.Chunk(_settings.BatchSize))
            .OrderBy(batch => batch[0].place)
            .SelectMany(batch => batch.Select(e => e.example))
            .ToArray();
    }

    /// <summary>Examples can share a pass when every input has the same shape.</summary>
    private static string BucketOf(Example example) =>
        $"{HostTensor.FormatShape(example.ImgCond.Shape)} {HostTensor.FormatShape(example.X0.Shape)} {HostTensor.FormatShape(example.Text.Txt.Shape)}";

    /// <summary>
    /// The next batch: its resolution (drawn only when there are several, so one resolution keeps the stream it always
    /// had), then up to BatchSize consecutive pairs of the order that share the first one's bucket at it.
    /// </summary>
    private List<Example> NextBatch()
    {
        if (_position == _order.Length) _order = NewOrder();
        var examples = _atResolution.Count == 1 ? _atResolution[0] : _atResolution[_random.NextInt(_atResolution.Count)];
        var batch = new List<Example> { examples[_order[_position++]] };
        string bucket = BucketOf(batch[0]);
        while (batch.Count < _settings.BatchSize && _position < _order.Length && BucketOf(examples[_order[_position]]) == bucket)
            batch.Add(examples[_order[_position++]]);
        return batch;
    }

    /// <summary>One optimizer step (over <see cref="TrainingSettings.Accumulate"/> batches); returns the mean loss, or NaN when skipped.</summary>
    public double TrainStep(NonFiniteGuard guard)
    {
        double loss = ComputeGradients();
        double norm = Gradients.GlobalNorm(_training, _withGradients);
        Step++;
        if (guard.Check(Step, loss, norm) == NonFiniteDecision.Skip) return double.NaN;
        if (_settings.MaxGradientNorm > 0) Gradients.ClipGlobalNorm(_training, _withGradients, _settings.MaxGradientNorm);
        _optimizer.Step(_parameters, _schedule.At(Step - 1));
        return loss;
    }

    /// <summary>
    /// The step's gradients, left in <see cref="Parameters"/>: the mean over <see cref="TrainingSettings.Accumulate"/>
    /// batches of each batch's mean-loss gradient, drawing the batches and their σ and noise. Returns the mean loss.
    /// </summary>
    public double ComputeGradients()
    {
        foreach (var p in _parameters) _training.Scale(p.Gradient, 0f);
        // The seed's frozen img_in keeps its gradient from step to step, once over the ranks, in the scale the mean
        // over the batches below undoes.
        foreach (var p in _seedFrozen) _training.Scale(p.Gradient, _group.IsRoot ? _settings.Accumulate : 0f);
        double loss = 0;
        for (int micro = 0; micro < _settings.Accumulate; micro++)
            loss += ForwardBackward(NextBatch()) / _settings.Accumulate;
        if (_settings.Accumulate > 1)
            foreach (var p in _withGradients) _training.Scale(p.Gradient, 1f / _settings.Accumulate);
        if (_exchange != null)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            Span<double> shared = [loss];
            _exchange.Sum(_withGradients, shared, $"the gradients of step {Step + 1}");
            loss = shared[0];
            ExchangeSeconds += clock.Elapsed.TotalSeconds;
        }
        return loss;
    }

    /// <summary>
    /// The loss over every example, each pair at each resolution (or every one of <paramref name="heldOut"/>) at a fixed σ and noise from its own seed:
    /// a measure of progress that the training draws do not move, so it falls only if the adapters learned.
    /// </summary>
    public double Evaluate(double sigma, long noiseSeed, IReadOnlyList<Example>? heldOut = null)
    {
        var random = new TrainingRandom(noiseSeed);
        var examples = heldOut ?? _examples;
        var share = _group.Share(examples.Count);
        double total = 0;
        for (int index = 0; index < examples.Count; index++)
        {
            // Every rank draws every example's noise, so each share sees the noise one process would.
            var example = examples[index];
            var noise = new HostTensor((int[])example.X0.Shape.Clone());
            random.FillGaussian(noise.Data);
            if (index < share.Start.Value || index >= share.End.Value) continue;
            var inputs = Inputs([example], [FlowMatching.Interpolate(example.X0, noise, sigma)], [sigma]);
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
        Span<double> sum = [total];
        _group.AllReduceSum(sum, "the evaluation loss");
        return sum[0] / examples.Count;
    }

    /// <summary>The model's inputs for a batch of examples of one bucket, each [1, ...] stacked along the first axis.</summary>
    private Dictionary<string, DeviceTensor> Inputs(IReadOnlyList<Example> batch, IReadOnlyList<HostTensor> noisy, IReadOnlyList<double> sigmas)
    {
        int count = batch.Count;
        DeviceTensor Stacked(Func<int, HostTensor> part) => _backend.Upload(StackBatch(Enumerable.Range(0, count).Select(part).ToList()));
        return new()
        {
            ["img"] = Stacked(b => LatentPacking.ConcatFeatures(noisy[b], batch[b].ImgCond)),
            ["img_ids"] = Stacked(b => batch[b].ImgIds),
            ["txt"] = Stacked(b => batch[b].Text.Txt),
            ["txt_ids"] = _backend.Upload(new HostTensor(count, batch[0].Text.Txt.Shape[1], 3)),
            ["timesteps"] = _backend.Upload(new HostTensor(new[] { count }, sigmas.Select(s => (float)s).ToArray())),
            ["y"] = Stacked(b => batch[b].Text.Vec),
            ["guidance"] = _backend.Upload(new HostTensor(new[] { count }, Enumerable.Repeat((float)_settings.Guidance, count).ToArray())),
        };
    }

    /// <summary>Tensors of one shape with a leading axis of 1, joined along it.</summary>
    private static HostTensor StackBatch(IReadOnlyList<HostTensor> parts)
    {
        if (parts.Count == 1) return parts[0];
        if (parts.Any(p => p.Shape[0] != 1 || !p.Shape.AsSpan().SequenceEqual(parts[0].Shape)))
            throw new InvalidOperationException(
                $"a batch must be examples of one shape, got {string.Join(", ", parts.Select(p => HostTensor.FormatShape(p.Shape)).Distinct())}");
        var shape = (int[])parts[0].Shape.Clone();
        shape[0] = parts.Count;
        var stacked = new HostTensor(shape);
        for (int b = 0; b < parts.Count; b++) parts[b].Data.CopyTo(stacked.Data, b * parts[0].Data.Length);
        return stacked;
    }

    /// <summary>Example <paramref name="index"/> of a batched tensor: [B, ...] → [1, ...].</summary>
    private static HostTensor Unstack(HostTensor batched, int index)
    {
        var shape = (int[])batched.Shape.Clone();
        int per = (int)(batched.Length / shape[0]);
        shape[0] = 1;
        return new HostTensor(shape, batched.Data.AsSpan(index * per, per).ToArray());
    }

    /// <summary>
    /// One forward and backward pass over this rank's share of a batch: per example (in order) σ, then its noise, from
    /// the run's stream, so a batch draws what the same examples one by one would, on every rank. Returns the share's
    /// part of the batch's mean loss; the gradients it adds are those of that part (the ranks' parts sum to the mean).
    /// </summary>
    private double ForwardBackward(IReadOnlyList<Example> globalBatch)
    {
        var share = _group.Share(globalBatch.Count);
        var batch = globalBatch.Take(share).ToList();
        int count = batch.Count, examples = globalBatch.Count;
        var sigmas = new double[count];
        var noisy = new HostTensor[count];
        var targets = new HostTensor[count];
        for (int g = 0; g < examples; g++)
        {
            var example = globalBatch[g];
            // The side first, then σ and the noise: with one side the stream is what it always was.
            if (_settings.BothSides && _random.NextDouble() < 0.5)
                example = example with { ImgCond = example.Reversed!.Value.ImgCond, TokenWeights = example.Reversed.Value.TokenWeights };
            double sigma = FlowMatching.SampleSigma(_random, _settings.Sampling, _settings.LogitMean, _settings.LogitStd, _settings.ModeScale);
            var noise = new HostTensor((int[])example.X0.Shape.Clone());
            _random.FillGaussian(noise.Data);
            int b = g - share.Start.Value;
            if (b < 0 || b >= count) continue;
            sigmas[b] = sigma;
            batch[b] = example;
            noisy[b] = FlowMatching.Interpolate(example.X0, noise, sigma);
            targets[b] = FlowMatching.VelocityTarget(example.X0, noise);
        }
        if (count == 0) return 0;
        var inputs = Inputs(batch, noisy, sigmas);
        double loss = double.NaN;
        try
        {
            _transformer.ForwardBackward(inputs, output =>
            {
                var predictions = _backend.Download(output, output.Shape);
                var gradients = new List<HostTensor>(count);
                loss = 0;
                for (int b = 0; b < count; b++)
                {
                    var prediction = count == 1 ? predictions : Unstack(predictions, b);
                    double weight = FlowMatching.LossWeight(_settings.LossWeighting, sigmas[b]);
                    loss += weight * FlowMatching.WeightedMse(prediction, targets[b], batch[b].TokenWeights) / examples;
                    gradients.Add(WeightedMseGradient(prediction, targets[b], batch[b].TokenWeights, weight, examples));
                }
                return _backend.Upload(StackBatch(gradients));
            });
        }
        finally
        {
            foreach (var t in inputs.Values) t.Dispose();
        }
        return loss;
    }

    /// <summary>
    /// d/dprediction of one example's token-weighted mean squared error (weights normalised as WeightedMse does),
    /// times its σ's loss weight, divided by the examples whose mean the loss is.
    /// </summary>
    private static HostTensor WeightedMseGradient(HostTensor prediction, HostTensor target, float[] tokenWeights, double lossWeight, int examples)
    {
        int tokens = tokenWeights.Length, features = prediction.Data.Length / tokens;
        double weightSum = tokenWeights.Sum(w => (double)w) * features * examples;
        var gradient = new HostTensor((int[])prediction.Shape.Clone());
        for (int i = 0; i < prediction.Data.Length; i++)
            gradient.Data[i] = (float)(2 * lossWeight * tokenWeights[i / features] * ((double)prediction.Data[i] - target.Data[i]) / weightSum);
        return gradient;
    }

    public TrainingCheckpointInfo CheckpointInfo(string baseModel)
    {
        var extra = new Dictionary<string, string>
        {
            ["position"] = _position.ToString(CultureInfo.InvariantCulture),
            ["batch_size"] = _settings.BatchSize.ToString(CultureInfo.InvariantCulture),
            ["accumulate"] = _settings.Accumulate.ToString(CultureInfo.InvariantCulture),
        };
        if (_settings.Resolution != null) extra[ResolutionKey] = _settings.Resolution.ToString();
        return new(Step, _settings.Seed, _random.SaveState(), TrainingCheckpointInfo.FormatOrder(_order), _settings.Method.ToString().ToLowerInvariant(),
            _settings.Rank, _settings.Alpha, _targets, baseModel) { Extra = extra };
    }

    /// <summary>The checkpoint's record of the resolutions; older checkpoints lack it (they trained at one).</summary>
    private const string ResolutionKey = "resolution";

    public void SaveCheckpoint(string path, string baseModel) =>
        TrainingCheckpoint.Save(path, _backend, _parameters, _optimizer, CheckpointInfo(baseModel));

    /// <summary>Continues from a checkpoint: parameters, optimizer, step, random state and the place in the data order.</summary>
    public void Resume(string path)
    {
        if (_seedFrozen.Count > 0)
            throw new ArgumentException("the seed's frozen img_in keeps a gradient history that checkpoints do not hold: run it without --resume");
        var checkpoint = TrainingCheckpoint.Load(path);
        var info = checkpoint.Info;
        if (info.Rank != _settings.Rank || info.Method != _settings.Method.ToString().ToLowerInvariant() || !info.Targets.SequenceEqual(_targets))
            throw new InvalidDataException(
                $"{path} was trained with method {info.Method}, rank {info.Rank} and {info.Targets.Count} targets; this run has " +
                $"{_settings.Method.ToString().ToLowerInvariant()}, rank {_settings.Rank} and {_targets.Count}: resume with the same settings");
        // The batches a position starts depend on the batch size (and the data per step on both): older checkpoints
        // without these recorded ran batches of 1.
        foreach (var (key, value) in new[] { ("batch_size", _settings.BatchSize), ("accumulate", _settings.Accumulate) })
            if (info.Extra.TryGetValue(key, out string? saved) && saved != value.ToString(CultureInfo.InvariantCulture))
                throw new InvalidDataException($"{path} was trained with --{key.Replace('_', '-')} {saved}; this run has {value}: resume with the same value");
        // Other sizes are other latents (and several draw a resolution per batch): the run would not continue as it was.
        string? savedResolution = info.Extra.GetValueOrDefault(ResolutionKey);
        if (savedResolution != null ? _settings.Resolution != null && savedResolution != _settings.Resolution.ToString() : _atResolution.Count > 1)
            throw new InvalidDataException(
                $"{path} was trained {(savedResolution != null ? $"with --resolution {savedResolution}" : "at one resolution")}; this run has --resolution {_settings.Resolution}: resume with the same value");
        checkpoint.Restore(_backend, _parameters, _optimizer);
        Step = info.Step;
        _random = TrainingRandom.RestoreState(info.RandomState);
        _order = TrainingCheckpointInfo.ParseOrder(info.DataOrder);
        int pairs = _atResolution[0].Count;
        if (_order.Length != pairs || _order.Any(i => i < 0 || i >= pairs)
            || !info.Extra.TryGetValue("position", out var position) || !int.TryParse(position, CultureInfo.InvariantCulture, out _position)
            || _position < 0 || _position > _order.Length)
            throw new InvalidDataException($"{path} holds a data order over {_order.Length} pairs (or a damaged one); this run has {pairs}: resume with the same --data");
    }

    /// <summary>
    /// Digests of what every rank of a data-parallel run must hold alike before the first step: the settings, the
    /// examples, the trained tensors' starting values and the place in the data order and the random stream.
    /// </summary>
    public IReadOnlyList<(string What, byte[] Digest)> StateDigests()
    {
        var data = new StateDigest();
        foreach (var example in _examples)
        {
            data.Add(example.Name).Add(example.ImgCond.Data).Add(example.ImgIds.Data).Add(example.X0.Data).Add(example.TokenWeights)
                .Add(example.Text.Txt.Data).Add(example.Text.Vec.Data);
            if (example.Reversed is { } reversed) data.Add(reversed.ImgCond.Data).Add(reversed.TokenWeights);
        }
        var start = new StateDigest();
        foreach (var (name, value) in Trained()) start.Add(name).Add(value.Data);
        return
        [
            ("training options", new StateDigest().Add(_settings.ToString()).Finish()),
            ("training data (cached latents and captions)", data.Finish()),
            ("starting values of the trained tensors", start.Finish()),
            ("place in the data order and random stream", new StateDigest().Add(
                $"{Step} {_random.SaveState()} {TrainingCheckpointInfo.FormatOrder(_order)} {_position}").Finish()),
        ];
    }

    /// <summary>The trained tensors under their training names, for LoraWriter.</summary>
    public IReadOnlyDictionary<string, HostTensor> Trained() =>
        _parameters.ToDictionary(p => p.Name, p => TensorTransfer.Download(_backend, p.Value));

    public void Dispose()
    {
        _exchange?.Dispose();
        _optimizer.Dispose();
        _transformer.Training = null;
        if (_full != null)
        {
            // The weights belong to the caller; only the gradients are the trainer's.
            _full.Dispose();
            return;
        }
        foreach (var p in _seedFrozen) p.Gradient.Dispose();
        foreach (var p in _parameters)
        {
            p.Gradient.Dispose();
            if (!p.Name.EndsWith(".weight", StringComparison.Ordinal) && !p.Name.EndsWith(".bias", StringComparison.Ordinal)) p.Value.Dispose();
        }
    }
}
