using System.Collections.Immutable;
using System.IO;
using System.Linq;
using System.Threading;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Parsing;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Text;

namespace InFluxEdit.Generator;

/// <summary>
/// Compiles schemas/*.json (models) with schemas/graphs/*.json (architectures) into model classes during
/// `dotnet build`. Each stage yields values compared by content, so editing one model's file regenerates
/// that model alone; editing a graph regenerates the models built on it.
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class ModelGenerator : IIncrementalGenerator
{
    public const string ModelStep = "InFluxEdit.Model";

    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var schemaFiles = context.AdditionalTextsProvider
            .Where(file => file.Path.EndsWith(".json", System.StringComparison.OrdinalIgnoreCase));

        var graphs = schemaFiles
            .Where(file => SchemaParser.IsGraphFile(file.Path))
            .Select((file, token) => SchemaParser.ParseGraph(file.Path, Text(file, token)))
            .Collect()
            .Select((specs, _) => specs.ToEquatableArray());

        var models = schemaFiles
            .Where(file => !SchemaParser.IsGraphFile(file.Path))
            .Select((file, token) => SchemaParser.ParseModel(file.Path, Text(file, token)));

        // Two files with one "model" name would generate two classes (and sources) of that name: each gets a
        // diagnostic at its name instead. Only the names are collected, so editing a model's body stays incremental.
        var modelFilesByName = models
            .Select((model, _) => new ModelNameSpec(model.ClassName, model.FileName))
            .Collect()
            .Select((names, _) => names.OrderBy(n => n.FileName, System.StringComparer.Ordinal).ToEquatableArray());

        var compiled = models
            .Combine(graphs)
            .Combine(modelFilesByName)
            .Select((pair, _) => ModelCompiler.Compile(pair.Left.Left, pair.Left.Right, pair.Right))
            .WithTrackingName(ModelStep);

        context.RegisterSourceOutput(graphs, (spc, specs) =>
        {
            foreach (var graph in specs)
                foreach (var diagnostic in graph.Diagnostics) spc.ReportDiagnostic(ToRoslyn(diagnostic));
        });

        context.RegisterSourceOutput(compiled, (spc, model) =>
        {
            foreach (var diagnostic in model.Diagnostics) spc.ReportDiagnostic(ToRoslyn(diagnostic));
            if (model.Source != null) spc.AddSource(model.HintName, SourceText.From(model.Source, System.Text.Encoding.UTF8));
        });

        var catalog = compiled
            .Where(model => model.Source != null)
            .Select((model, _) => model.ClassName)
            .Collect()
            .Select((names, _) => names.ToEquatableArray());
        context.RegisterSourceOutput(catalog, (spc, names) =>
            spc.AddSource("ModelCatalog.g.cs", SourceText.From(ModelCompiler.EmitCatalog(names), System.Text.Encoding.UTF8)));
    }

    private static string Text(AdditionalText file, CancellationToken token) => file.GetText(token)?.ToString() ?? "";

    private static readonly ImmutableDictionary<string, string> Titles = new[]
    {
        (DiagnosticIds.InvalidJson, "Schema file is not valid JSON"),
        (DiagnosticIds.InvalidSchema, "Schema file is malformed"),
        (DiagnosticIds.UnknownOp, "Unknown op"),
        (DiagnosticIds.UnknownWeight, "Unknown weight"),
        (DiagnosticIds.UnusedWeight, "Weight declared but never used"),
        (DiagnosticIds.ShapeMismatch, "Shape mismatch"),
        (DiagnosticIds.InvalidParams, "Invalid model params"),
        (DiagnosticIds.DuplicateName, "Duplicate name"),
        (DiagnosticIds.UnknownValue, "Unknown value"),
        (DiagnosticIds.MissingGraph, "Graph not found"),
        (DiagnosticIds.InvalidExpression, "Invalid expression"),
    }.ToImmutableDictionary(p => p.Item1, p => p.Item2);

    private static Diagnostic ToRoslyn(SchemaDiagnostic d)
    {
        var descriptor = new DiagnosticDescriptor(d.Id, Titles.TryGetValue(d.Id, out var title) ? title : d.Id,
            "{0}", "InFluxEdit.Schema", DiagnosticSeverity.Error, isEnabledByDefault: true);
        var span = d.Span;
        var location = Location.Create(span.Path, new TextSpan(span.Start, span.Length),
            new LinePositionSpan(new LinePosition(span.Line, span.Column), new LinePosition(span.EndLine, span.EndColumn)));
        return Diagnostic.Create(descriptor, location, d.Message);
    }
}
