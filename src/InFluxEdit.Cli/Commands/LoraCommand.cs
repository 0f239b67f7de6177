using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Commands;

[Verb("lora", HelpText = "Look into or convert LoRA files: 'lora inspect FILE' (format, ranks, alphas, layers, what is skipped, whether a trained img_in is in it); 'lora convert IN OUT --format kohya|diffusers' (merge more with --lora).")]
public sealed class LoraOptions : OutputOptions
{
    [Value(0, MetaName = "ACTION", Required = true, HelpText = "inspect or convert.")]
    public string Action { get; set; } = "";

    [Value(1, MetaName = "FILES", HelpText = "inspect: the LoRA file. convert: the input LoRA and the output file.")]
    public IEnumerable<string> Files { get; set; } = Array.Empty<string>();

    [Option("format", HelpText = "convert: the layout written, kohya (ComfyUI; full-weight changes as .diff/.diff_b) or diffusers (PEFT; full-weight changes as full-rank lora_A/lora_B with lora_B.bias).")]
    public string? Format { get; set; }

    [Option("lora", HelpText = "convert: another LoRA merged into the output (repeat for several).")]
    public IEnumerable<string> Loras { get; set; } = Array.Empty<string>();

    [Option("lora-scale", HelpText = "convert: strength of the input, then of each --lora, in order (default 1.0 each); baked into the output.")]
    public IEnumerable<float> LoraScales { get; set; } = Array.Empty<float>();

    [Option("model", HelpText = "The compiled transformer the LoRA is for (see 'influx-cli models'). Default: the first whose layer names and shapes the file fits.")]
    public string? Model { get; set; }

    [Option("weights", HelpText = "The base checkpoint: needed to convert DoRA, set_weight and whole-weight entries (they are relative to it); inspect then checks them too.")]
    public string? Weights { get; set; }

    [Option("export-dtype", Default = "bf16", HelpText = "convert: element type written, bf16 (the peers' default), f16 or f32.")]
    public string ExportDType { get; set; } = "bf16";

    [Option("strict-lora", HelpText = "Refuse files holding keys this build does not apply instead of skipping them with a report.")]
    public bool StrictLora { get; set; }
}

public static class LoraCommand
{
    /// <summary>What 'lora inspect --json' reports: the model the file fits, its formats, adapters, full-weight changes and skipped keys.</summary>
    public sealed record LoraSummary(string File, string Model, IReadOnlyList<string> Formats, IReadOnlyList<AdapterSummary> Adapters,
        IReadOnlyList<string> FullWeightChanges, IReadOnlyList<SkippedKeys> Skipped);

    /// <summary>What 'lora convert --json' reports beside the file written.</summary>
    public sealed record LoraConversion(string Model, string Format, string DType, IReadOnlyList<string> Inputs);

    public static int Run(LoraOptions options) => Run(options, options.CommandOutput, ModelCatalog.All.Select(m => m.Descriptor).ToList());

    public static int Run(LoraOptions options, TextWriter log, IReadOnlyList<ModelDescriptor> catalog) => Run(options, CommandOutput.Plain(log), catalog);

    private static int Run(LoraOptions options, CommandOutput output, IReadOnlyList<ModelDescriptor> catalog)
    {
        var log = output.Log;
        var files = options.Files.ToList();
        var candidates = options.Model is { } name
            ? [catalog.FirstOrDefault(m => m.Name == name) ?? throw new ArgumentException($"--model {name} is not compiled in; 'influx-cli models' lists them")]
            : catalog.Where(m => m.LoraAliases.Count > 0).ToList();
        var baseWeights = options.Weights is { } weights ? LoraSet.BaseWeightsOf(weights) : null;
        switch (options.Action)
        {
            case "inspect":
                if (files.Count != 1) throw new ArgumentException($"lora inspect takes one FILE; got {files.Count}");
                var (model, content) = LoraInspection.Recognise(files[0], candidates, new LoraReadOptions(1f, options.StrictLora, baseWeights, DescribeOnly: true));
                foreach (string line in LoraInspection.Describe(files[0], model, content)) log.WriteLine(line);
                output.Result = new LoraSummary(Path.GetFullPath(files[0]), model.Name, content.Formats, content.Adapters,
                    content.Dense.Select(d => d.Parameter).Distinct().Order(StringComparer.Ordinal).ToList(), content.Skipped);
                return 0;
            case "convert":
                if (files.Count != 2) throw new ArgumentException($"lora convert takes IN and OUT; got {files.Count} file(s)");
                var format = LoraWriter.ParseFormat(options.Format ?? throw new ArgumentException("lora convert needs --format kohya or --format diffusers"));
                var dtype = LoraWriter.ParseDType(options.ExportDType);
                var inputs = new[] { files[0] }.Concat(options.Loras).ToList();
                var target = LoraInspection.Recognise(files[0], candidates, new LoraReadOptions(DescribeOnly: true)).Model;
                var merged = LoraSet.Read(inputs, options.LoraScales.ToList(), target, options.StrictLora, baseWeights, log);
                LoraWriter.Write(files[1], merged, target, format, new Dictionary<string, string>
                {
                    ["software"] = "InFluxEdit", ["converted_from"] = string.Join(", ", inputs.Select(Path.GetFileName)), ["base_model"] = target.Name,
                }, dtype);
                log.WriteLine($"wrote {files[1]} ({format.ToString().ToLowerInvariant()}, {dtype}) for {target.Name}");
                output.Wrote(files[1]);
                output.Result = new LoraConversion(target.Name, format.ToString().ToLowerInvariant(), dtype.ToString(), inputs.Select(Path.GetFullPath).ToList());
                return 0;
            default:
                throw new ArgumentException($"unknown lora action '{options.Action}'; use inspect or convert");
        }
    }
}
