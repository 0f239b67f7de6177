using System.Reflection;
using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;

namespace InFluxEdit.Cli.Commands;

/// <summary>The options of every command that say how much it prints: --quiet and --json, for scripts.</summary>
public abstract class OutputOptions
{
    private CommandOutput? _output;

    [Option("quiet", HelpText = "Print nothing but errors (on stderr); the exit code says how it went (0: done).")]
    public bool Quiet { get; set; }

    [Option("json", HelpText = "For scripts: print one JSON object on stdout at the end (command, exitCode, written: the full paths written, result, seconds, error: message and exitCode or null); the usual lines go to stderr (none with --quiet).")]
    public bool Json { get; set; }

    /// <summary>Where this command prints, made once from --quiet, --json and whether stdout is a terminal.</summary>
    public CommandOutput CommandOutput => _output ??= CommandOutput.ForProcess(GetType().GetCustomAttribute<VerbAttribute>()?.Name ?? "", Quiet, Json);
}

public abstract class DeviceOptions : OutputOptions
{
    [Option("device", Default = "auto", HelpText = "Where to run: auto (CUDA when a GPU is present, else CPU), cpu or cuda.")]
    public string Device { get; set; } = "auto";

    [Option("precision", Default = "auto", HelpText = "CUDA arithmetic: auto (bf16, as the Python tools run FLUX; parity: fp32), fp32 (exact float32, for parity; products without tensor cores, several times slower) or bf16 (the speed of the real model: matrix products on tensor cores with bf16 inputs and float32 accumulation; activations are stored in bf16 too, in forwards and training steps alike, with norms, softmax and reductions accumulating in float32; LoRA factors, trained weights, their gradients and optimizer state stay float32). The CPU computes in float32 whatever this says.")]
    public string Precision { get; set; } = "auto";

    /// <summary>What --precision auto means for this command: bf16, the speed users expect of a GPU; parity keeps exact float32.</summary>
    protected virtual GpuPrecision AutoPrecision => GpuPrecision.BFloat16;

    /// <summary>--precision as the backend takes it.</summary>
    public GpuPrecision PrecisionInEffect =>
        Precision.Equals("auto", StringComparison.OrdinalIgnoreCase) ? AutoPrecision : BackendFactory.ParsePrecision(Precision);

    [Option("attention", Default = "auto", HelpText = "CUDA attention kernel: auto (flash with --precision bf16 where the head size is a multiple of 16 up to 128, else cublas), flash (FlashAttention-2 on bf16 tensor cores, float32 softmax statistics, no score matrix; compute 8.0+), cublas (float32 score matrix between two cuBLAS products: the reference) or tiled (the scalar ILGPU kernel).")]
    public string Attention { get; set; } = "auto";

    [Option("offload", HelpText = "CUDA only, for GPUs smaller than the model (FLUX's bf16 transformer is 23.8 GB): weight matrices stay in page-locked host memory and are copied to the GPU just ahead of use, overlapped with compute, within --gpu-memory-budget; biases and norm scales stay on the GPU. Slower than holding every weight on the GPU (each pass copies what does not fit). With --device cpu it is an error: the weights are in host memory already.")]
    public bool Offload { get; set; }

    [Option("gpu-memory-budget", HelpText = "With --offload: GiB of GPU memory the offloaded weights may take at once (the rest is left to activations). Default: half the GPU's free memory when the command starts.")]
    public double? GpuMemoryBudget { get; set; }

    /// <summary>--offload and --gpu-memory-budget as the backend takes them; null without --offload.</summary>
    public WeightOffload? WeightOffloadRequest() => GpuMemoryBudget switch
    {
        not null when !Offload => throw new ArgumentException("--gpu-memory-budget sizes --offload's share of the GPU: add --offload (or drop the budget)"),
        <= 0 or double.NaN => throw new ArgumentException($"--gpu-memory-budget must be a positive number of GiB, not {GpuMemoryBudget}"),
        double gib => new WeightOffload((long)(gib * (1L << 30))),
        null => Offload ? new WeightOffload() : null,
    };

    /// <summary>Creates the backend and says which one runs.</summary>
    /// <param name="localRank">A data-parallel rank's index on its machine: the GPU it takes.</param>
    public IBackend CreateBackend(TextWriter log, int localRank = 0)
    {
        var backend = BackendFactory.Create(BackendFactory.ParseChoice(Device), PrecisionInEffect, localRank, WeightOffloadRequest(),
            BackendFactory.ParseAttention(Attention));
        log.WriteLine($"device: {backend.Description}");
        return backend;
    }

    /// <summary>With --offload: what was offloaded and copied, once the work is done.</summary>
    public static void ReportOffload(IBackend backend, TextWriter log)
    {
        if (backend is Runtime.Backends.Gpu.IlgpuBackend { OffloadSummary: { } summary })
            log.WriteLine($"offload: {summary}");
    }
}

/// <summary>How prompts and captions become the transformer's txt and vec: the text encoders, or precomputed embeddings.</summary>
public abstract class TextEncoderOptions : DeviceOptions
{
    [Option("flux-dir", HelpText = "A FLUX.1 Fill model folder as Hugging Face ships it: the transformer (flux1-fill-dev.safetensors), ae.safetensors and the text encoders with their tokenizers come from it; --weights, --vae and the text encoder options override its parts.")]
    public string? FluxDir { get; set; }

    [Option("text-encoder-dir", HelpText = "Default: --flux-dir. A FLUX model folder (Hugging Face layout): text_encoder/ (CLIP-L), text_encoder_2/ (T5-XXL, shards are fine), tokenizer/ (vocab.json, merges.txt), tokenizer_2/ (spiece.model). --clip, --t5, --clip-tokenizer and --t5-tokenizer override its parts.")]
    public string? TextEncoderDir { get; set; }

    [Option("clip", HelpText = "The CLIP-L text encoder: a .safetensors file (Hugging Face CLIPTextModel keys) or a folder of them with config.json.")]
    public string? Clip { get; set; }

    [Option("t5", HelpText = "The T5-XXL encoder: a .safetensors file (Hugging Face T5EncoderModel keys; fp8 too, e.g. t5xxl_fp8_e4m3fn.safetensors), a GGUF file (llama.cpp's tensor names too, e.g. t5-v1_1-xxl-encoder-Q8_0.gguf) or a folder of shards with config.json. fp8 and GGUF matrices stay quantized in memory.")]
    public string? T5 { get; set; }

    [Option("clip-tokenizer", HelpText = "The folder with CLIP's vocab.json and merges.txt.")]
    public string? ClipTokenizer { get; set; }

    [Option("t5-tokenizer", HelpText = "T5's spiece.model (or the folder that holds it).")]
    public string? T5Tokenizer { get; set; }

    [Option("t5-length", HelpText = "T5 tokens per prompt, padded (pads are attended, so this changes the encoding). Default: the length a model folder made by pretrain-toy was trained at (its toy.json), else 128 as BFL's Fill tools; diffusers uses 512.")]
    public int? T5Length { get; set; }

    [Option("text-embeddings", HelpText = "Instead of the encoders: a .safetensors file with 'txt' [1, L, context_in_dim] and 'vec' [1, vec_in_dim], used for every prompt and caption.")]
    public string? TextEmbeddings { get; set; }

    /// <summary>These options as the engine takes them.</summary>
    public Text.TextEncoderSettings TextSettings => new()
    {
        FluxDir = FluxDir, TextEncoderDir = TextEncoderDir, Clip = Clip, T5 = T5, ClipTokenizer = ClipTokenizer,
        T5Tokenizer = T5Tokenizer, T5Length = T5Length, TextEmbeddings = TextEmbeddings,
    };
}
