using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Backends.Planning;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Text;

namespace InFluxEdit.Benchmarks;

/// <summary>What a memory plan covers: the models, the image size, the CUDA settings and the base precisions to compare.</summary>
public sealed record MemoryPlanSettings
{
    public string Model { get; init; } = "flux-fill-dev";
    public string VaeModel { get; init; } = "flux-vae";
    public string ClipModel { get; init; } = "clip-l";
    public string T5Model { get; init; } = "t5-xxl";
    public int Width { get; init; } = 1024;
    public int Height { get; init; } = 1024;

    /// <summary>T5 tokens of the prompt (--t5-length): the transformer's text tokens.</summary>
    public int TextTokens { get; init; } = 512;

    public int Rank { get; init; } = 16;
    public string Preset { get; init; } = "diffusers";
    public GpuPrecision Precision { get; init; } = GpuPrecision.BFloat16;
    public AttentionKernelChoice Attention { get; init; } = AttentionKernelChoice.Auto;

    /// <summary>The transformer's --base-precision per row group; null: as the checkpoint stores it (bf16 for FLUX).</summary>
    public IReadOnlyList<BasePrecision?> Bases { get; init; } = [null, BasePrecision.Parse("fp8"), BasePrecision.Parse("q8_0"), BasePrecision.Parse("q4_k")];

    /// <summary>--gpu-memory-budget of the --offload rows; null: no offload rows.</summary>
    public long? OffloadBudgetBytes { get; init; }

    /// <summary>The transformer checkpoint's stored format per tensor (an fp8 or GGUF file); null: the schema's dtypes.</summary>
    public IReadOnlyDictionary<string, TensorFormat>? TransformerFormats { get; init; }

    /// <summary>The VAE's tiling (--vae-tile), as edit runs it.</summary>
    public VaeTiling VaeTiling { get; init; } = VaeTiling.Default;

    /// <summary>Image tokens of the transformer: one per 16×16 pixels.</summary>
    public int ImageTokens => Width / 16 * (Height / 16);
}

/// <summary>
/// Device bytes of one planned run: the weights, the most the pools held (activations and scratch, parked buffers
/// included: the backend's own count), the most of both at once, and the most the run needs (parked buffers left out,
/// as a pool frees them when the device runs out).
/// </summary>
public sealed record MemoryFigures(long WeightBytes, long ActivationPeakBytes, long TotalPeakBytes, long NeededBytes);

/// <summary>One row of a memory plan: what ran, with which base precision and options, and its figures.</summary>
public sealed record MemoryPlanRow(string Work, string Base, bool Offload, MemoryFigures Figures);

/// <summary>
/// GPU memory planned (not measured) for FLUX Fill's work on the CUDA backend, at real size, in seconds and with no GPU:
/// each run executes the compiled graphs on a <see cref="MemoryPlanBackend"/>, which counts what IlgpuBackend would
/// hold. The measurements themselves (<see cref="ForwardPeak"/>, <see cref="LoraStepPeak"/>) take any backend that
/// counts its memory, so tests check the plan against the ILGPU simulator's own count.
/// </summary>
public static class MemoryPlan
{
    public const string TextEncoderWork = "text encoders: CLIP-L + T5 (then freed)";
    public const string EditWork = "edit step (+ VAE encode/decode)";
    public const string LoraWork = "LoRA training step";
    public const string LoraRecomputeWork = "LoRA training step --recompute";
    public const string LoraOffloadedCheckpointsWork = "LoRA step --recompute --offload-checkpoints";

    /// <summary>
    /// Every row: the text encoders once, then per base precision (and again with --offload when a budget is given) an
    /// edit and a LoRA step without recomputation, with it, and with it and the block boundaries in host memory.
    /// </summary>
    public static IReadOnlyList<MemoryPlanRow> Plan(MemoryPlanSettings settings, IProgress<(int Done, int Total)>? progress = null)
    {
        if (settings.Width % 16 != 0 || settings.Height % 16 != 0 || settings.Width <= 0 || settings.Height <= 0)
            throw new ArgumentException($"--resolution {settings.Width}x{settings.Height}: both sides must be positive multiples of 16 (the transformer packs 16×16 pixels per token)");
        if (settings.TextTokens < 1) throw new ArgumentException($"--t5-length must be at least 1 (got {settings.TextTokens})");
        var offloads = settings.OffloadBudgetBytes is null ? new[] { false } : new[] { false, true };
        // T5 as its checkpoint stores it (bf16), and as t5xxl_fp8_e4m3fn.safetensors does: an fp8 file stays fp8 in memory.
        BasePrecision?[] t5Precisions = [null, BasePrecision.Parse("fp8")];
        int total = t5Precisions.Length + settings.Bases.Count * offloads.Length * 4, done = 0;
        var rows = new List<MemoryPlanRow>();
        void Add(MemoryPlanRow row)
        {
            rows.Add(row);
            progress?.Report((++done, total));
        }
        foreach (var t5Precision in t5Precisions)
            Add(new MemoryPlanRow(TextEncoderWork, t5Precision is null ? "as stored" : $"T5 {t5Precision}", false,
                EncodePrompt(NewBackend(settings, offload: false), settings, t5Precision)));
        foreach (bool offload in offloads)
            foreach (var basePrecision in settings.Bases)
            {
                string name = basePrecision?.ToString() ?? "as stored";
                Add(new MemoryPlanRow(EditWork, name, offload, Edit(settings, basePrecision, offload)));
                Add(new MemoryPlanRow(LoraWork, name, offload, LoraStep(settings, basePrecision, offload, recompute: false)));
                Add(new MemoryPlanRow(LoraRecomputeWork, name, offload, LoraStep(settings, basePrecision, offload, recompute: true)));
                Add(new MemoryPlanRow(LoraOffloadedCheckpointsWork, name, offload,
                    LoraStep(settings, basePrecision, offload, recompute: true, offloadCheckpoints: true)));
            }
        return rows;
    }

    private static MemoryPlanBackend NewBackend(MemoryPlanSettings settings, bool offload) =>
        new(PlannedDevice.Cuda(settings.Precision, settings.Attention, offload ? settings.OffloadBudgetBytes : null));

    private static MemoryFigures Figures(MemoryPlanBackend plan, long weightBytes) =>
        new(weightBytes, plan.PeakAllocatedBytes, plan.PeakTotalBytes, plan.PeakNeededBytes);

    /// <summary>
    /// CLIP as stored and T5 as stored or held in <paramref name="t5Precision"/> (a T5 file in that format), one prompt
    /// encoded at the settings' T5 length, as edit and train encode captions before the transformer loads.
    /// </summary>
    private static MemoryFigures EncodePrompt(MemoryPlanBackend plan, MemoryPlanSettings settings, BasePrecision? t5Precision = null)
    {
        var clipInfo = Benchmarks.Compiled(settings.ClipModel);
        var t5Info = Benchmarks.Compiled(settings.T5Model);
        var clipWeights = plan.PlaceWeights(clipInfo.Descriptor);
        var t5Weights = plan.PlaceWeights(t5Info.Descriptor, t5Precision);
        long weightBytes = plan.WeightBytes;
        try
        {
            int clipLength = TextConditioning.IntParam(clipInfo.Descriptor, "max_position_embeddings");
            TextEncoders.EncodeClip(clipInfo.Create(plan, clipWeights), [new int[clipLength]]);
            TextEncoders.EncodeT5(t5Info.Create(plan, t5Weights), [new int[settings.TextTokens]]);
            return Figures(plan, weightBytes);
        }
        finally
        {
            foreach (var w in clipWeights.Values.Concat(t5Weights.Values)) w.Dispose();
        }
    }

    /// <summary>
    /// An edit as the CLI runs one on a fresh backend: the prompt encoded first (its parked buffers released after, as
    /// edit does), then as edit runs: the VAE loaded, the image encoded, the transformer loaded, two sampling steps, the
    /// transformer freed, the decode. The figures are those of the phase after the text encoders.
    /// </summary>
    private static MemoryFigures Edit(MemoryPlanSettings settings, BasePrecision? basePrecision, bool offload)
    {
        var plan = NewBackend(settings, offload);
        EncodePrompt(plan, settings);
        plan.ReleaseCachedMemory();
        plan.StartPhase();
        return Edit(plan, Benchmarks.Compiled(settings.Model), Benchmarks.Compiled(settings.VaeModel), settings, basePrecision);
    }

    /// <summary>The transformer and VAE phase of an edit (the VAE, the tiled encode, the transformer loaded for two steps, the decode) on <paramref name="plan"/>.</summary>
    private static MemoryFigures Edit(MemoryPlanBackend plan, CompiledModelInfo transformerInfo, CompiledModelInfo vaeInfo, MemoryPlanSettings settings,
        BasePrecision? basePrecision)
    {
        var vaeWeights = plan.PlaceWeights(vaeInfo.Descriptor);
        long weightBytes = 0;
        try
        {
            LoadedModel LoadTransformer()
            {
                var loaded = LoadedModel.Over(transformerInfo, plan, plan.PlaceWeights(transformerInfo.Descriptor, basePrecision, settings.TransformerFormats), "planned");
                weightBytes = plan.WeightBytes;
                return loaded;
            }
            var pipeline = FillPipeline.LoadingTransformerForSampling(transformerInfo.Descriptor, LoadTransformer, vaeInfo.Create(plan, vaeWeights), settings.VaeTiling);
            int Param(string name) => int.Parse(transformerInfo.Descriptor.Params[name], System.Globalization.CultureInfo.InvariantCulture);
            var request = new FillEditRequest(new HostTensor(1, 3, settings.Height, settings.Width), new HostTensor(1, 1, settings.Height, settings.Width),
                EditMethod.Fill, new TextConditioning(new HostTensor(1, settings.TextTokens, Param("context_in_dim")), new HostTensor(1, Param("vec_in_dim"))),
                Steps: 2, Seed: 1);
            pipeline.Edit(request);
            return Figures(plan, weightBytes);
        }
        finally
        {
            foreach (var w in vaeWeights.Values) w.Dispose();
        }
    }

    private static MemoryFigures LoraStep(MemoryPlanSettings settings, BasePrecision? basePrecision, bool offload, bool recompute, bool offloadCheckpoints = false)
    {
        var plan = NewBackend(settings, offload);
        var bench = new BenchSettings
        {
            Model = settings.Model, ImageTokens = settings.ImageTokens, TextTokens = settings.TextTokens, Rank = settings.Rank, Preset = settings.Preset,
            BasePrecision = basePrecision,
        };
        long peak = LoraStepPeak(plan, bench, recompute, model => plan.PlaceWeights(model, basePrecision), out long weightBytes, offloadCheckpoints: offloadCheckpoints);
        return new MemoryFigures(weightBytes, peak, plan.PeakTotalBytes, plan.PeakNeededBytes);
    }

    /// <summary>
    /// The most <paramref name="backend"/>'s pools held (its <see cref="IMemoryStatistics"/> peak) over one transformer
    /// forward at the given tokens, from the weights it already holds.
    /// </summary>
    public static long ForwardPeak(IBackend backend, CompiledModelInfo info, IReadOnlyDictionary<string, DeviceTensor> weights, int imageTokens, int textTokens)
    {
        var statistics = Statistics(backend);
        var model = info.Create(backend, weights);
        var inputs = BenchInputs.Create(info.Descriptor, 1, imageTokens, textTokens).ToDictionary(p => p.Key, p => backend.Upload(p.Value));
        try
        {
            statistics.ResetPeak();
            foreach (var output in model.Run(inputs).Values) output.Dispose();
            backend.Synchronize();
            return statistics.PeakAllocatedBytes;
        }
        finally
        {
            foreach (var t in inputs.Values) t.Dispose();
        }
    }

    /// <summary>
    /// The <see cref="IMemoryStatistics"/> peak over LoRA training steps of the settings' model, preset and rank, with or
    /// without recomputation; <paramref name="weights"/> places the model's weights (null: seeded random ones). Two
    /// steps by default: the first creates AdamW's moments, the second runs as every later one does.
    /// <paramref name="offloadCheckpoints"/>: the block boundaries wait in host memory (TrainingState.OffloadCheckpoints).
    /// </summary>
    public static long LoraStepPeak(IBackend backend, BenchSettings settings, bool recompute,
        Func<ModelDescriptor, IReadOnlyDictionary<string, DeviceTensor>>? weights, out long weightBytes, int steps = 2, bool offloadCheckpoints = false)
    {
        var statistics = Statistics(backend);
        using var rig = new LoraBenchRig(settings, backend, Benchmarks.Seed, null, weights);
        weightBytes = rig.Weights.Values.Sum(w => w.StoredBytes);
        rig.Model.Training = rig.State;
        rig.State.Recompute = recompute;
        rig.State.OffloadCheckpoints = offloadCheckpoints;
        statistics.ResetPeak();
        for (int step = 0; step < steps; step++) rig.Step();
        return statistics.PeakAllocatedBytes;
    }

    /// <summary>
    /// On CUDA, refuses an edit whose planned need (transformer and VAE loaded, the image encoded, sampled and decoded)
    /// exceeds the GPU's free memory before anything loads, naming the settings that would fit; elsewhere does nothing.
    /// The plan takes a few seconds at real size, against minutes of loading into a GPU that cannot hold the run.
    /// </summary>
    public static void RequireFitsGpuForEditing(IBackend backend, CompiledModelInfo transformer, CompiledModelInfo vae, int width, int height,
        int textTokens, BasePrecision? basePrecision, VaeTiling tiling, string checkpoint)
    {
        if (backend is not IlgpuBackend gpu || gpu.FreeDeviceBytes() is not long free) return;
        if (GpuShortfallForEditing(PlannedDevice.Of(gpu), free, gpu.Description.Split(',')[0], transformer, vae, width, height, textTokens, basePrecision, tiling,
                LoadedModel.StoredFormats(checkpoint, transformer))
            is string shortfall)
            throw new InsufficientMemoryException(shortfall);
    }

    /// <summary>The planned bytes an edit needs on <paramref name="device"/> (see <see cref="MemoryFigures.NeededBytes"/>).</summary>
    public static long EditNeededBytes(PlannedDevice device, CompiledModelInfo transformer, CompiledModelInfo vae, int width, int height,
        int textTokens, BasePrecision? basePrecision, VaeTiling tiling, IReadOnlyDictionary<string, TensorFormat>? storedFormats = null) =>
        Edit(new MemoryPlanBackend(device), transformer, vae,
            new MemoryPlanSettings { Width = width, Height = height, TextTokens = textTokens, VaeTiling = tiling, TransformerFormats = storedFormats },
            basePrecision).NeededBytes;

    /// <summary>
    /// Null when the planned edit fits <paramref name="freeBytes"/>; else why not, with the settings planned to fit
    /// (a smaller --base-precision, --offload at its default budget, --precision bf16).
    /// </summary>
    public static string? GpuShortfallForEditing(PlannedDevice device, long freeBytes, string deviceName, CompiledModelInfo transformer, CompiledModelInfo vae,
        int width, int height, int textTokens, BasePrecision? basePrecision, VaeTiling tiling, IReadOnlyDictionary<string, TensorFormat>? storedFormats = null)
    {
        long free = freeBytes;
        long Needed(PlannedDevice on, BasePrecision? precision) =>
            EditNeededBytes(on, transformer, vae, width, height, textTokens, precision, tiling, storedFormats);
        long needed = Needed(device, basePrecision);
        if (needed <= free) return null;
        var fitting = CheaperSettings(device, free, basePrecision, Needed, alongside: "");
        if (device.Precision != GpuPrecision.BFloat16 && Needed(device with { Precision = GpuPrecision.BFloat16 }, basePrecision) is var narrow && narrow <= free)
            fitting.Add($"--precision bf16 ({Gb(narrow)} GB)");
        return Shortfall($"editing at {width}x{height}", needed, deviceName, free, fitting, otherwise: "give a smaller --input");
    }

    /// <summary>
    /// The cheaper settings <paramref name="needed"/> plans to fit <paramref name="free"/> bytes, each with
    /// <paramref name="alongside"/>: every smaller --base-precision, and --offload at its default budget.
    /// </summary>
    private static List<string> CheaperSettings(PlannedDevice device, long free, BasePrecision? basePrecision,
        Func<PlannedDevice, BasePrecision?, long> needed, string alongside)
    {
        var fitting = new List<string>();
        foreach (string format in new[] { "q8_0", "q4_k" })
            if (BasePrecision.Parse(format) is { } cheaper && basePrecision?.Format != cheaper.Format && needed(device, cheaper) is var bytes && bytes <= free)
                fitting.Add($"--base-precision {format}{alongside} ({Gb(bytes)} GB)");
        if (device.OffloadBudgetBytes is null)
        {
            long budget = (long)(free * WeightOffload.DefaultShareOfFreeMemory);
            if (needed(device with { OffloadBudgetBytes = budget }, basePrecision) is var bytes && bytes <= free)
                fitting.Add($"--offload{alongside} ({Gb(bytes)} GB with its default budget of {Gb(budget)} GB)");
        }
        return fitting;
    }

    /// <summary>Why <paramref name="work"/> does not fit, and what would: the refusal's one line.</summary>
    private static string Shortfall(string work, long needed, string deviceName, long free, List<string> fitting, string otherwise) =>
        $"{work} needs about {Gb(needed)} GB of GPU memory (planned from the CUDA backend's allocation rules), and {deviceName} has {Gb(free)} GB free: " +
        (fitting.Count > 0 ? $"planned to fit: {string.Join("; ", fitting)}" : otherwise) + " ('influx-cli memory' plans every setting).";

    /// <summary>
    /// On CUDA, refuses LoRA training whose planned need (the transformer's LoRA steps at the largest batch of tokens the
    /// run trains on) exceeds the GPU's free memory before the transformer loads, naming the settings planned to fit
    /// (--recompute, --offload-checkpoints, a smaller --base-precision, --offload); elsewhere does nothing.
    /// </summary>
    public static void RequireFitsGpuForTraining(IBackend backend, CompiledModelInfo transformer, int imageTokens, int textTokens, int batch,
        int rank, string preset, bool recompute, bool offloadCheckpoints, BasePrecision? basePrecision, string checkpoint)
    {
        if (backend is not IlgpuBackend gpu || gpu.FreeDeviceBytes() is not long free) return;
        if (GpuShortfallForTraining(PlannedDevice.Of(gpu), free, gpu.Description.Split(',')[0], transformer, imageTokens, textTokens, batch, rank, preset,
                recompute, offloadCheckpoints, basePrecision, LoadedModel.StoredFormats(checkpoint, transformer)) is string shortfall)
            throw new InsufficientMemoryException(shortfall);
    }

    /// <summary>Null when the planned LoRA training fits <paramref name="free"/> bytes; else why not, with the settings planned to fit.</summary>
    public static string? GpuShortfallForTraining(PlannedDevice device, long free, string deviceName, CompiledModelInfo transformer, int imageTokens,
        int textTokens, int batch, int rank, string preset, bool recompute, bool offloadCheckpoints, BasePrecision? basePrecision,
        IReadOnlyDictionary<string, TensorFormat>? storedFormats)
    {
        long Needed(PlannedDevice on, BasePrecision? precision, bool withRecompute, bool withOffloadedCheckpoints)
        {
            var plan = new MemoryPlanBackend(on);
            var settings = new BenchSettings
            {
                Model = transformer.Descriptor.Name, ImageTokens = imageTokens, TextTokens = textTokens, Batch = batch, Rank = rank, Preset = preset,
                BasePrecision = precision,
            };
            LoraStepPeak(plan, settings, withRecompute, model => plan.PlaceWeights(model, precision, storedFormats), out _,
                offloadCheckpoints: withOffloadedCheckpoints);
            return plan.PeakNeededBytes;
        }
        long needed = Needed(device, basePrecision, recompute, offloadCheckpoints);
        if (needed <= free) return null;
        var fitting = new List<string>();
        if (!recompute && Needed(device, basePrecision, true, offloadCheckpoints) is var recomputed && recomputed <= free)
            fitting.Add($"--recompute ({Gb(recomputed)} GB)");
        if (!offloadCheckpoints && Needed(device, basePrecision, true, true) is var offloaded && offloaded <= free)
            fitting.Add($"--recompute --offload-checkpoints ({Gb(offloaded)} GB)");
        fitting.AddRange(CheaperSettings(device, free, basePrecision, (on, precision) => Needed(on, precision, true, true),
            alongside: " --recompute --offload-checkpoints"));
        return Shortfall($"training at {imageTokens} image + {textTokens} text tokens per example, batch {batch},", needed, deviceName, free, fitting,
            otherwise: "lower --resolution or --batch-size");
    }

    private static string Gb(long bytes) => (bytes / 1e9).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);

    private static IMemoryStatistics Statistics(IBackend backend) => backend as IMemoryStatistics
        ?? throw new ArgumentException($"the {backend.Name} backend does not count its memory");
}
