using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Commands;

[Verb("models", HelpText = "List the models compiled into this build (one per schemas/*.json).")]
public sealed class ModelsOptions : OutputOptions
{
}

[Verb("inspect", HelpText = "Tell which compiled model a checkpoint is (from __metadata__.config or its tensors) and summarise its tensors.")]
public sealed class InspectOptions : OutputOptions
{
    [Value(0, MetaName = "FILE", Required = true, HelpText = "A checkpoint: .safetensors (float or fp8) or .gguf.")]
    public string File { get; set; } = "";
}

public static class ModelsCommand
{
    /// <summary>One compiled model, as 'models --json' reports it.</summary>
    public sealed record ModelRow(string Name, string Schema, string Family, long Parameters, int Tensors);

    /// <summary>A checkpoint, as 'inspect --json' reports it: its tensors by format and the model it is.</summary>
    public sealed record CheckpointSummary(string File, int Tensors, IReadOnlyDictionary<string, int> TensorsByFormat, long Values, string Model, string Schema, string Reason);

    public static int List(ModelsOptions options)
    {
        var output = options.CommandOutput;
        var models = ModelCatalog.All.Select(m => m.Descriptor)
            .Select(m => new ModelRow(m.Name, "schemas/" + m.SchemaFile, m.Family, m.Parameters.Sum(p => HostTensor.ElementCount(p.Shape)), m.Parameters.Count))
            .ToList();
        var table = output.Table("model", "schema", "family", "parameters", "weights");
        foreach (var model in models)
            table.AddCells(model.Name, model.Schema, model.Family, $"{model.Parameters:N0}", $"{model.Tensors} tensors");
        output.Write(table);
        output.Result = new { Models = models };
        return 0;
    }

    public static int Inspect(InspectOptions options)
    {
        var output = options.CommandOutput;
        using var file = WeightFile.Open(options.File);
        long elements = file.StoredTensors.Sum(t => t.ElementCount);
        var formats = file.StoredTensors.GroupBy(t => t.FormatName).ToDictionary(g => g.Key, g => g.Count());
        output.Log.WriteLine($"{options.File}: {file.StoredTensors.Count} tensors ({string.Join(", ", formats.Select(p => $"{p.Value} {p.Key}"))}), {elements:N0} values");
        var match = ModelRecognizer.Recognize(file, ModelCatalog.All.Select(m => m.Descriptor));
        output.Log.WriteLine($"model: {match.Model.Name} (schemas/{match.Model.SchemaFile}) — {match.Reason}");
        output.Result = new CheckpointSummary(Path.GetFullPath(options.File), file.StoredTensors.Count, formats, elements, match.Model.Name, "schemas/" + match.Model.SchemaFile, match.Reason);
        return 0;
    }
}
