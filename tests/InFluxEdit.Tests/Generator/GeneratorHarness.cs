using System.Collections.Immutable;
using InFluxEdit.Generator;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Text;

namespace InFluxEdit.Tests.Generator;

/// <summary>An in-memory schema file, as MSBuild hands AdditionalFiles to the generator.</summary>
public sealed class SchemaText : AdditionalText
{
    private readonly SourceText _text;

    public SchemaText(string path, string text)
    {
        Path = path;
        _text = SourceText.From(text);
    }

    public override string Path { get; }
    public override SourceText GetText(CancellationToken cancellationToken = default) => _text;
}

/// <summary>Runs the real incremental generator over schema files, outside MSBuild.</summary>
public static class GeneratorHarness
{
    public static SchemaText RepoSchema(string relativePath) =>
        new(Path.Combine(TestPaths.SchemasDir, relativePath), File.ReadAllText(Path.Combine(TestPaths.SchemasDir, relativePath)));

    public static ImmutableArray<SchemaText> RepoSchemas(params string[] relativePaths) =>
        relativePaths.Select(RepoSchema).ToImmutableArray();

    public static GeneratorDriver CreateDriver(IEnumerable<AdditionalText> files) =>
        CSharpGeneratorDriver.Create(
            new[] { new ModelGenerator().AsSourceGenerator() },
            additionalTexts: files,
            driverOptions: new GeneratorDriverOptions(IncrementalGeneratorOutputKind.None, trackIncrementalGeneratorSteps: true));

    public static Compilation EmptyCompilation() => CSharpCompilation.Create("SchemaTests");

    public static GeneratorRunResult Run(IEnumerable<AdditionalText> files)
    {
        var driver = CreateDriver(files).RunGenerators(EmptyCompilation());
        return driver.GetRunResult().Results.Single();
    }
}
