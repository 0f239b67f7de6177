using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Parsing;
using Shouldly;

namespace InFluxEdit.Tests.Generator;

/// <summary>The first entry of a model bound to its graph, from schema text or from the repository's schemas, for the planners' tests.</summary>
internal static class BoundEntries
{
    public static BoundEntry First(string model, string graph, bool unrollLoops = false)
    {
        var graphSpec = SchemaParser.ParseGraph("/schemas/graphs/g.json", graph);
        graphSpec.Diagnostics.ShouldBeEmpty();
        var (bound, diagnostics) = GraphBinder.Bind(SchemaParser.ParseModel("/schemas/m.json", model), graphSpec, unrollLoops);
        diagnostics.ShouldBeEmpty();
        return bound!.Entries[0];
    }

    public static BoundEntry RepoModel(string model, string graph, bool unrollLoops = false) =>
        First(File.ReadAllText(Path.Combine(TestPaths.SchemasDir, model)), File.ReadAllText(Path.Combine(TestPaths.SchemasDir, graph)), unrollLoops);
}
