using CommandLine;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Cli.Commands;

[Verb("convert", HelpText = "Convert a weights file between safetensors and GGUF and between formats: the output's container follows OUT's extension (.gguf or .safetensors). Reads safetensors (F32, F16, BF16, F64, F8_E4M3, F8_E5M2) and GGUF v3 (F32, F16, BF16, Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q2_K…Q6_K). '--to f32' to a .safetensors writes every tensor decoded, for inspection.")]
public sealed class ConvertOptions : OutputOptions
{
    [Value(0, MetaName = "IN", Required = true, HelpText = "The weights file to read (.safetensors or .gguf; GGUF is recognised by its magic).")]
    public string Input { get; set; } = "";

    [Value(1, MetaName = "OUT", Required = true, HelpText = "The file to write; .gguf writes GGUF, any other name safetensors. Written atomically.")]
    public string Output { get; set; } = "";

    [Option("to", HelpText = "The format to store tensors in: f32, bf16, f16 (every float tensor), fp8 (E4M3, as ComfyUI's fp8 checkpoints) or fp8-e5m2 (safetensors only), q8_0, q5_1, q5_0, q4_1, q4_0, q6_k, q5_k, q4_k, q3_k, q2_k (GGUF only; ggml's reference quantizers). fp8 and the q formats apply to weight matrices; vectors (biases, norms) keep their format, and a K-quant falls back to a 32-element format on rows that are not whole 256-element blocks, as llama.cpp does. A file recognised as one of the built-in models keeps the layers its schema lists as unquantized (FLUX: img_in, txt_in, time_in, vector_in, guidance_in, final_layer) in their float format, as city96's FLUX GGUF files do and as --base-precision does at load. Default: every tensor keeps its format where OUT's container can hold it and is decoded to f32 where it cannot.")]
    public string? To { get; set; }
}

public static class ConvertCommand
{
    /// <summary>What 'convert --json' reports beside the file written: tensors per format, the bytes of tensor data, what was left out.</summary>
    public sealed record ConversionReport(IReadOnlyDictionary<string, int> TensorsByFormat, long DataBytes, IReadOnlyList<string> Skipped,
        string? Model, IReadOnlyList<string> Unquantized);

    public static int Run(ConvertOptions options)
    {
        var output = options.CommandOutput;
        TensorFormat? to = null;
        if (options.To != null)
            to = TensorFormats.TryParseOption(options.To, out TensorFormat parsed) ? parsed
                : throw new ArgumentException($"--to '{options.To}' is not a format; use one of: {TensorFormats.OptionNames}.");
        var summary = WeightConverter.Convert(options.Input, options.Output, to, ModelCatalog.All.Select(m => m.Descriptor));
        output.Log.WriteLine($"wrote {options.Output}: {summary.TensorsByFormat.Values.Sum()} tensors, {summary.DataBytes / 1e6:F1} MB of tensor data");
        foreach (var (format, count) in summary.TensorsByFormat.OrderBy(p => p.Key))
            output.Log.WriteLine($"  {format,-8} {count} tensors");
        foreach (string skipped in summary.Skipped)
            output.Log.WriteLine($"  skipped {skipped}");
        if (summary.Model != null)
            output.Log.WriteLine($"  recognised as {summary.Model}: {summary.Unquantized!.Count} weight matrices kept unquantized ({string.Join(", ", summary.Unquantized)})");
        output.Wrote(options.Output);
        output.Result = new ConversionReport(summary.TensorsByFormat.ToDictionary(p => p.Key.ToString(), p => p.Value), summary.DataBytes, summary.Skipped,
            summary.Model, summary.Unquantized ?? []);
        return 0;
    }
}
