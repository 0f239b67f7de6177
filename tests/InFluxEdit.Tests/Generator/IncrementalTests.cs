using Microsoft.CodeAnalysis;
using Shouldly;
using InFluxEdit.Generator;

namespace InFluxEdit.Tests.Generator;

public class IncrementalTests
{
    [Fact]
    public void EditingOneModelSchemaRegeneratesOnlyThatModel()
    {
        var tiny = GeneratorHarness.RepoSchema("flux-fill-tiny.json");
        var dev = GeneratorHarness.RepoSchema("flux-fill-dev.json");
        var graph = GeneratorHarness.RepoSchema("graphs/flux-transformer.json");
        var driver = GeneratorHarness.CreateDriver(new[] { tiny, dev, graph }).RunGenerators(GeneratorHarness.EmptyCompilation());

        var editedTiny = new SchemaText(tiny.Path, tiny.GetText()!.ToString().Replace("\"depth\": 2,", "\"depth\": 3,"));
        driver = driver.ReplaceAdditionalText(tiny, editedTiny).RunGenerators(GeneratorHarness.EmptyCompilation());

        var steps = driver.GetRunResult().Results.Single().TrackedSteps[ModelGenerator.ModelStep];
        var reasons = steps.SelectMany(step => step.Outputs).Select(output => output.Reason).ToList();
        reasons.Count(r => r == IncrementalStepRunReason.Modified).ShouldBe(1);
        reasons.Count(r => r is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged).ShouldBe(1);

        var regenerated = driver.GetRunResult().Results.Single().GeneratedSources.Single(s => s.HintName == "FluxFillTiny.g.cs");
        regenerated.SourceText.ToString().ShouldContain("i < 3");
    }

    [Fact]
    public void EditingTheGraphRegeneratesEveryModelBuiltOnIt()
    {
        var tiny = GeneratorHarness.RepoSchema("flux-fill-tiny.json");
        var dev = GeneratorHarness.RepoSchema("flux-fill-dev.json");
        var graph = GeneratorHarness.RepoSchema("graphs/flux-transformer.json");
        var driver = GeneratorHarness.CreateDriver(new[] { tiny, dev, graph }).RunGenerators(GeneratorHarness.EmptyCompilation());

        var editedGraph = new SchemaText(graph.Path, graph.GetText()!.ToString().Replace("\"eps\": 1e-6, \"out\": \"{s}_x\"", "\"eps\": 1e-5, \"out\": \"{s}_x\""));
        driver = driver.ReplaceAdditionalText(graph, editedGraph).RunGenerators(GeneratorHarness.EmptyCompilation());

        var steps = driver.GetRunResult().Results.Single().TrackedSteps[ModelGenerator.ModelStep];
        steps.SelectMany(step => step.Outputs).Count(o => o.Reason == IncrementalStepRunReason.Modified).ShouldBe(2);
    }
}
