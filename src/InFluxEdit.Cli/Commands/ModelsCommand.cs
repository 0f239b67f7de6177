using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.WeightFiles;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Commands;

[Verb("models", HelpText = "List the models compiled into this build (one per schemas/*.json).")]
public sealed class ModelsOptions
{
}

[Verb("inspect", HelpText = "Tell which compiled model a checkpoint is (from __metadata__.config or its tensors) and summarise its tensors.")]
public sealed class InspectOptions
{
    [Value(0, MetaName = "FILE", Required = true, HelpText = "A checkpoint: .safetensors (float or fp8) or .gguf.")]
    public string File { get; set; } = "";
}

public static class ModelsCommand
{
    public static int List()
    {
        var table = new ConsoleTable("model", "schema", "family", "parameters", "weights");
        foreach (var model in ModelCatalog.All.Select(m => m.Descriptor))
        {
            long count = model.Parameters.Sum(p => HostTensor.ElementCount(p.Shape));
            table.Add(model.Name, "schemas/" + model.SchemaFile, model.Family, $"{count:N0}", $"{model.Parameters.Count} tensors");
        }
        table.Write(System.Console.Out);
        return 0;
    }

    public static int Inspect(InspectOptions options)
    {
        using var file = WeightFile.Open(options.File);
        long elements = file.StoredTensors.Sum(t => t.ElementCount);
        var dtypes = string.Join(", ", file.StoredTensors.GroupBy(t => t.FormatName).Select(g => $"{g.Count()} {g.Key}"));
        System.Console.WriteLine($"{options.File}: {file.StoredTensors.Count} tensors ({dtypes}), {elements:N0} values");
        var match = ModelRecognizer.Recognize(file, ModelCatalog.All.Select(m => m.Descriptor));
        System.Console.WriteLine($"model: {match.Model.Name} (schemas/{match.Model.SchemaFile}) — {match.Reason}");
        return 0;
    }
}
