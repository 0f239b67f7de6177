using CommandLine;
using InFluxEdit.Benchmarks;
using InFluxEdit.Cli.Console;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Distributed;

namespace InFluxEdit.Cli.Commands;

[Verb("bench", HelpText = "Benchmarks. 'bench forward' times one transformer forward pass (median after warm-up) and, when available, the same model in PyTorch on the same device in the same run (bf16 when --precision bf16 on CUDA, else float32). 'bench edit' times a whole edit (VAE encode, sampling steps, decode) at a given image size. 'bench train' times a LoRA training step, keeping every activation and recomputing each block's, against a forward pass of the same model, with the peak memory of each, and PyTorch's LoRA step of the same adapters (kept and with torch.utils.checkpoint per block) in the same run.")]
public sealed class BenchOptions : DeviceOptions
{
    [Value(0, MetaName = "WHAT", Required = true, HelpText = "What to time: forward, edit or train.")]
    public string What { get; set; } = "";

    [Option("model", Default = "flux-mid", HelpText = "A compiled model's name (see 'influx-cli models').")]
    public string Model { get; set; } = "flux-mid";

    [Option("weights", HelpText = "A checkpoint to time with; by default seeded random weights.")]
    public string? Weights { get; set; }

    [Option(BasePrecisionOption.Name, HelpText = BasePrecisionOption.Help)]
    public string? BasePrecision { get; set; }

    [Option("tokens", Default = 1024, HelpText = "Image tokens (a 512x512 image packs to 1024, 1024x1024 to 4096).")]
    public int ImageTokens { get; set; } = 1024;

    [Option("txt-tokens", Default = 128, HelpText = "Text tokens (FLUX Fill uses 128 or 512); bench edit: the prompt's T5 tokens.")]
    public int TextTokens { get; set; } = 128;

    [Option("batch", Default = 1, HelpText = "Batch size.")]
    public int Batch { get; set; } = 1;

    [Option("runs", Default = 5, HelpText = "Timed runs (the median is reported).")]
    public int Runs { get; set; } = 5;

    [Option("warmup", Default = 2, HelpText = "Untimed runs first.")]
    public int Warmup { get; set; } = 2;

    [Option("baseline", Default = "auto", HelpText = "bench forward and train: the same-run PyTorch baseline (bench/pytorch_flux_forward.py) on our device and in our precision, with the ratio our time / PyTorch's and both peak memories: auto (run it when installed), pytorch (require it: an error when it cannot run), none.")]
    public string Baseline { get; set; } = "auto";

    [Option("vae-model", Default = "flux-vae-tiny", HelpText = "bench edit: the compiled VAE (flux-vae for the real one).")]
    public string VaeModel { get; set; } = "flux-vae-tiny";

    [Option("width", Default = 512, HelpText = "bench edit: image width in pixels.")]
    public int Width { get; set; } = 512;

    [Option("height", Default = 512, HelpText = "bench edit: image height in pixels.")]
    public int Height { get; set; } = 512;

    [Option("steps", Default = 4, HelpText = "bench edit: sampling steps.")]
    public int Steps { get; set; } = 4;

    [Option("method", Default = EditMethod.Channel, HelpText = "bench edit: fill, channel or concat (concat samples a diptych twice as wide).")]
    public EditMethod Method { get; set; } = EditMethod.Channel;

    [Option("clip-model", HelpText = "bench edit: also time the prompt's encoding, as edit --prompt runs it, with this compiled CLIP (clip-l for the real one; seeded random weights and token ids). Give --t5-model with it.")]
    public string? ClipModel { get; set; }

    [Option("t5-model", HelpText = "bench edit: the compiled T5 encoder for --clip-model's timing (t5-xxl for the real one), over --txt-tokens tokens; the encoders are released before the transformer's weights are made, as in edit.")]
    public string? T5Model { get; set; }

    [Option("rank", Default = 16, HelpText = "bench train: LoRA rank.")]
    public int Rank { get; set; } = 16;

    [Option("preset", Default = "diffusers", HelpText = "bench train: a LoRA preset of the model's schema (FLUX: diffusers or kohya).")]
    public string Preset { get; set; } = "diffusers";

    [Option("ranks", Default = 1, HelpText = "bench train under mpirun -np N: data-parallel steps on N ranks (each with --batch examples) against rank 0 training alone, in the same run: examples per second per rank, scaling efficiency and the gradient exchange's time per step.")]
    public int Ranks { get; set; } = 1;

    [Option("profile", HelpText = "Also print the time per op of a forward (bench forward) or of a forward and backward pass without recomputation (bench train), and the TFLOP/s the products (Linear, Gemm) and attention achieved (their FLOPs from the shapes: 2·M·N·K per product, 4·B·H·Lq·Lk·D per attention forward, 10·… backward, over their profiled time). The profile is one more pass after the timed ones (it waits for every op, so its total is slower than theirs); the timings and the ratio to PyTorch stay unprofiled.")]
    public bool Profile { get; set; }

    [Option("python", Default = "/usr/bin/python3", HelpText = "The Python that has torch (bench/install-pytorch-baseline.sh installs Debian's; on a GPU image, e.g. python3 from PATH).")]
    public string Python { get; set; } = "/usr/bin/python3";
}

public static partial class BenchCommand
{
    public static int Run(BenchOptions options)
    {
        var settings = new BenchSettings
        {
            Model = options.Model, Weights = options.Weights, ImageTokens = options.ImageTokens, TextTokens = options.TextTokens, Batch = options.Batch,
            Runs = options.Runs, Warmup = options.Warmup, Profile = options.Profile, Python = options.Baseline == "none" ? null : options.Python,
            VaeModel = options.VaeModel, ClipModel = options.ClipModel, T5Model = options.T5Model, Width = options.Width, Height = options.Height, Steps = options.Steps, Method = options.Method,
            Rank = options.Rank, Preset = options.Preset, BasePrecision = Runtime.Quantization.BasePrecision.Parse(options.BasePrecision),
        };
        if (options.What is not ("forward" or "edit" or "train"))
            throw new ArgumentException($"unknown benchmark '{options.What}': this build has 'forward', 'edit' and 'train'");
        if (options.What == "train" && (options.Ranks > 1 || ProcessGroups.LaunchedByMpi)) return BenchDataParallel.Run(options, settings);
        var output = options.CommandOutput;
        using var backend = options.CreateBackend(output.Log);
        // The CPU computes in float32 whatever --precision says; on CUDA the baseline runs in the precision our products do.
        bool bf16 = backend.Name == "cuda" && options.PrecisionInEffect == Runtime.Backends.Gpu.GpuPrecision.BFloat16;
        settings = settings with { BaselineDType = bf16 ? "bf16" : "fp32" };
        if (options.What == "edit")
        {
            var result = Benchmarks.Benchmarks.Edit(settings, backend, output.Stages);
            output.Result = result;
            WriteEdit(result, output);
        }
        else if (options.What == "train")
        {
            var result = Benchmarks.Benchmarks.Train(settings, backend, output.Stages, output.Notes);
            output.Result = new { Benchmark = result with { Profile = null }, Profile = Ops(result.Profile), result.Profile?.Achieved };
            WriteTraining(result, options, output);
        }
        else
        {
            var result = Benchmarks.Benchmarks.Forward(settings, backend, output.Notes, output.Stages);
            output.Result = new { Benchmark = result with { Profile = null }, Profile = Ops(result.Profile), result.Profile?.Achieved };
            WriteForward(result, options, output);
        }
        DeviceOptions.ReportOffload(backend, output.Log);
        return 0;
    }

    /// <summary>A profile for --json: seconds and calls per op (a tuple would be written as an empty object).</summary>
    private static Dictionary<string, OpTiming>? Ops(OpProfile? profile) => profile?.Ops.ToDictionary(p => p.Key, p => new OpTiming(p.Value.Seconds, p.Value.Calls));

    private sealed record OpTiming(double Seconds, int Calls);
}
