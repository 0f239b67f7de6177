using InFluxEdit.Generator;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Parsing;
using Shouldly;

namespace InFluxEdit.Tests.Generator;

/// <summary>One test per class of bad schema: each names the file, the line and what to fix.</summary>
public class DiagnosticsTests
{
    private const string GraphPath = "/schemas/graphs/mlp.json";
    private const string ModelPath = "/schemas/mlp-small.json";

    private const string Model = """
        {
          "model": "MlpSmall",
          "graph": "mlp",
          "params": { "width": 8, "hidden": 16, "heads": 2 }
        }
        """;

    // A small valid graph; each test breaks one line of it.
    private const string Graph = """
        {
          "graph": "mlp",
          "params": { "width": "int", "hidden": "int", "heads": "int" },
          "require": [ { "that": "width % heads == 0", "message": "width must be divisible by heads" } ],
          "sizes": { "B": "batch", "L": "tokens" },
          "inputs": { "x": ["B", "L", "width"] },
          "weights": {
            "fc1.weight": ["hidden", "width"],
            "fc1.bias": ["hidden"],
            "fc2.weight": ["width", "hidden"]
          },
          "body": [
            { "op": "linear", "x": "x", "weight": "fc1.weight", "bias": "fc1.bias", "out": "h" },
            { "op": "gelu_tanh", "x": "h", "out": "h" },
            { "op": "linear", "x": "h", "weight": "fc2.weight", "out": "y" }
          ],
          "outputs": ["y"]
        }
        """;

    private static IReadOnlyList<SchemaDiagnostic> Compile(string graph, string model = Model)
    {
        var graphSpec = SchemaParser.ParseGraph(GraphPath, graph);
        if (graphSpec.Diagnostics.Count > 0) return graphSpec.Diagnostics;
        var result = ModelCompiler.Compile(SchemaParser.ParseModel(ModelPath, model), new[] { graphSpec }.ToEquatableArray());
        return result.Diagnostics;
    }

    private static SchemaDiagnostic Single(IReadOnlyList<SchemaDiagnostic> diagnostics, string id)
    {
        diagnostics.Count.ShouldBe(1, string.Join("\n", diagnostics));
        diagnostics[0].Id.ShouldBe(id, diagnostics[0].ToString());
        return diagnostics[0];
    }

    /// <summary>1-based line of the first occurrence of a snippet, as an editor shows it.</summary>
    private static int LineOf(string text, string snippet) =>
        text.Substring(0, text.IndexOf(snippet, StringComparison.Ordinal)).Count(c => c == '\n') + 1;

    [Fact]
    public void TheBaseGraphCompiles() => Compile(Graph).ShouldBeEmpty();

    [Fact]
    public void UnknownOpNamesTheOpAndTheKnownOnes()
    {
        string graph = Graph.Replace("\"op\": \"gelu_tanh\"", "\"op\": \"gelu_fast\"");
        var d = Single(Compile(graph), DiagnosticIds.UnknownOp);
        d.Message.ShouldContain("unknown op 'gelu_fast'");
        d.Message.ShouldContain("gelu_tanh");
        d.Span.Path.ShouldBe(GraphPath);
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "gelu_fast"));
    }

    [Fact]
    public void UnknownWeightSuggestsTheDeclaredOne()
    {
        string graph = Graph.Replace("\"weight\": \"fc2.weight\"", "\"weight\": \"fc3.weight\"").Replace(",\n    \"fc2.weight\": [\"width\", \"hidden\"]", "");
        var diagnostics = Compile(graph);
        var d = diagnostics.First(x => x.Id == DiagnosticIds.UnknownWeight);
        d.Message.ShouldContain("unknown weight 'fc3.weight'");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "fc3.weight"));
    }

    [Fact]
    public void WeightThatNoOpUsesIsReported()
    {
        string graph = Graph.Replace("\"fc1.bias\": [\"hidden\"],", "\"fc1.bias\": [\"hidden\"],\n    \"fc1.scale\": [\"hidden\"],");
        var d = Single(Compile(graph), DiagnosticIds.UnusedWeight);
        d.Message.ShouldContain("fc1.scale");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "fc1.scale"));
    }

    [Fact]
    public void ShapeMismatchShowsBothShapes()
    {
        string graph = Graph.Replace("\"fc2.weight\": [\"width\", \"hidden\"]", "\"fc2.weight\": [\"width\", \"width\"]");
        var d = Single(Compile(graph), DiagnosticIds.ShapeMismatch);
        d.Message.ShouldContain("[B, L, 16]");
        d.Message.ShouldContain("[8, 8]");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "{ \"op\": \"linear\", \"x\": \"h\""));
    }

    [Fact]
    public void InvalidParamsPointAtTheModelFileLine()
    {
        string model = Model.Replace("\"heads\": 2", "\"heads\": 3");
        var d = Single(Compile(Graph, model), DiagnosticIds.InvalidParams);
        d.Message.ShouldContain("width must be divisible by heads");
        d.Message.ShouldContain("heads = 3");
        d.Span.Path.ShouldBe(ModelPath);
        (d.Span.Line + 1).ShouldBe(LineOf(model, "\"width\": 8"));
    }

    [Fact]
    public void FluxHeadDimMustEqualTheRopeAxes()
    {
        string model = File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "flux-fill-tiny.json")).Replace("[8, 12, 12]", "[8, 12, 16]");
        string graph = File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "graphs", "flux-transformer.json"));
        var graphSpec = SchemaParser.ParseGraph("/schemas/graphs/flux-transformer.json", graph);
        var result = ModelCompiler.Compile(SchemaParser.ParseModel("/schemas/flux-fill-tiny.json", model), new[] { graphSpec }.ToEquatableArray());
        var d = Single(result.Diagnostics, DiagnosticIds.InvalidParams);
        d.Message.ShouldContain("sum(axes_dim) must equal the head dim");
        (d.Span.Line + 1).ShouldBe(LineOf(model, "\"hidden_size\""));
    }

    private static IReadOnlyList<SchemaDiagnostic> CompileRepoModel(string modelFile, string graphFile, Func<string, string> editModel)
    {
        string model = editModel(File.ReadAllText(Path.Combine(TestPaths.SchemasDir, modelFile)));
        string graph = File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "graphs", graphFile));
        var graphSpec = SchemaParser.ParseGraph("/schemas/graphs/" + graphFile, graph);
        return ModelCompiler.Compile(SchemaParser.ParseModel("/schemas/" + modelFile, model), new[] { graphSpec }.ToEquatableArray()).Diagnostics;
    }

    [Fact]
    public void UnsupportedEncoderActivationIsRefusedAtItsParam()
    {
        string model = File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "clip-tiny.json")).Replace("\"quick_gelu\"", "\"gelu\"");
        var d = Single(CompileRepoModel("clip-tiny.json", "clip-text.json", _ => model), DiagnosticIds.InvalidParams);
        d.Message.ShouldContain("hidden_act must be 'quick_gelu'");
        d.Message.ShouldContain("hidden_act = 'gelu'");
        (d.Span.Line + 1).ShouldBe(LineOf(model, "\"hidden_act\""));
    }

    [Fact]
    public void UnsupportedT5FeedForwardIsRefused()
    {
        var d = Single(CompileRepoModel("t5-tiny.json", "t5-encoder.json", m => m.Replace("\"gated-gelu\"", "\"relu\"")),
            DiagnosticIds.InvalidParams);
        d.Message.ShouldContain("feed_forward_proj must be 'gated-gelu'");
    }

    [Fact]
    public void StringParamsMustBeStrings()
    {
        var d = Single(CompileRepoModel("clip-tiny.json", "clip-text.json", m => m.Replace("\"quick_gelu\"", "7")),
            DiagnosticIds.InvalidParams);
        d.Message.ShouldContain("param 'hidden_act' must be a string");
    }

    [Fact]
    public void AttentionBiasMustBeHeadsByQueriesByKeys()
    {
        string graph = File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "graphs", "t5-encoder.json"))
            .Replace("\"queries\": \"L\", \"keys\": \"L\"", "\"queries\": \"L\", \"keys\": \"L + 1\"");
        var graphSpec = SchemaParser.ParseGraph("/schemas/graphs/t5-encoder.json", graph);
        var model = SchemaParser.ParseModel("/schemas/t5-tiny.json", File.ReadAllText(Path.Combine(TestPaths.SchemasDir, "t5-tiny.json")));
        var d = Single(ModelCompiler.Compile(model, new[] { graphSpec }.ToEquatableArray()).Diagnostics, DiagnosticIds.ShapeMismatch);
        d.Message.ShouldContain("must be [4, L, L] (heads, queries, keys)");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "\"bias\": \"position_bias\""));
    }

    [Fact]
    public void MissingAndUnknownParamsAreNamed()
    {
        string model = Model.Replace("\"hidden\": 16", "\"hiden\": 16");
        var diagnostics = Compile(Graph, model);
        diagnostics.ShouldContain(d => d.Id == DiagnosticIds.InvalidParams && d.Message.Contains("param 'hidden'") && d.Message.Contains("missing"));
        diagnostics.ShouldContain(d => d.Id == DiagnosticIds.InvalidParams && d.Message.Contains("unknown param 'hiden'"));
    }

    [Fact]
    public void DuplicateWeightNamesAreReported()
    {
        string graph = Graph.Replace("\"fc1.bias\": [\"hidden\"],", "\"fc1.bias\": [\"hidden\"],\n    \"fc1.bias\": [\"hidden\"],");
        var d = Single(Compile(graph), DiagnosticIds.DuplicateName);
        d.Message.ShouldContain("'fc1.bias' is declared twice");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "fc1.bias") + 1);
    }

    [Fact]
    public void UnknownValueSuggestsAClose()
    {
        string graph = Graph.Replace("\"x\": \"h\", \"weight\": \"fc2.weight\"", "\"x\": \"hh\", \"weight\": \"fc2.weight\"");
        var d = Single(Compile(graph), DiagnosticIds.UnknownValue);
        d.Message.ShouldContain("unknown value 'hh' (did you mean 'h'?)");
    }

    [Fact]
    public void InputGradientsMustNameAnInput()
    {
        string graph = Graph.Replace("\"outputs\": [\"y\"]", "\"outputs\": [\"y\"],\n  \"input_gradients\": [\"h\"]");
        var d = Single(Compile(graph), DiagnosticIds.UnknownValue);
        d.Message.ShouldContain("'h' is not an input");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "\"input_gradients\""));
    }

    [Fact]
    public void ATrainableLayerWithoutABackwardRuleIsRefused()
    {
        // An affine LayerNorm (the text encoders') has no backward rule: naming it trainable cannot silently train nothing.
        string graph = Graph
            .Replace("\"fc2.weight\": [\"width\", \"hidden\"]", "\"fc2.weight\": [\"width\", \"hidden\"],\n    \"norm.weight\": [\"width\"]")
            .Replace("\"body\": [", "\"trainable\": [\"norm\"],\n  \"body\": [\n    { \"op\": \"layer_norm\", \"x\": \"x\", \"scale\": \"norm.weight\", \"out\": \"x\" },");
        var d = Single(Compile(graph), DiagnosticIds.InvalidSchema);
        d.Message.ShouldContain("op 'layer_norm' has no backward rule");
    }

    [Fact]
    public void BrokenJsonGivesItsLine()
    {
        string graph = Graph.Replace("\"out\": \"y\" }", "\"out\": \"y\" ");
        var d = Compile(graph).First();
        d.Id.ShouldBe(DiagnosticIds.InvalidJson);
        d.Span.Line.ShouldBeGreaterThan(10);
    }

    [Fact]
    public void MissingGraphListsTheKnownGraphs()
    {
        var d = Single(Compile(Graph, Model.Replace("\"graph\": \"mlp\"", "\"graph\": \"mpl\"")), DiagnosticIds.MissingGraph);
        d.Message.ShouldContain("no graph named \"mpl\"");
        d.Message.ShouldContain("\"mlp\"");
    }

    [Fact]
    public void UnknownTemplateListsTheKnownOnes()
    {
        string graph = Graph.Replace("\"body\": [\n    { \"op\": \"linear\", \"x\": \"x\"", "\"templates\": { \"mlp\": { \"body\": [] } },\n  \"body\": [\n    { \"use\": \"mpl\" },\n    { \"op\": \"linear\", \"x\": \"x\"");
        var d = Compile(graph).First();
        d.Id.ShouldBe(DiagnosticIds.InvalidSchema);
        d.Message.ShouldContain("unknown template 'mpl' (known: mlp)");
    }

    [Fact]
    public void ValueMayNotShadowAParam()
    {
        string graph = Graph.Replace("\"out\": \"h\" },\n    { \"op\": \"gelu_tanh\"", "\"out\": \"hidden\" },\n    { \"op\": \"gelu_tanh\"");
        var d = Compile(graph).First();
        d.Message.ShouldContain("value 'hidden' has the name of a param");
    }

    [Fact]
    public void UnknownArgumentIsReported()
    {
        string graph = Graph.Replace("\"op\": \"gelu_tanh\", \"x\": \"h\"", "\"op\": \"gelu_tanh\", \"x\": \"h\", \"approximate\": true");
        var d = Single(Compile(graph), DiagnosticIds.InvalidSchema);
        d.Message.ShouldContain("gelu_tanh has no argument \"approximate\"");
    }

    [Fact]
    public void TwoModelFilesWithOneNameAreADiagnosticAtEachNameNotAGeneratorCrash()
    {
        var files = new[]
        {
            new SchemaText(GraphPath, Graph),
            new SchemaText(ModelPath, Model),
            new SchemaText("/schemas/mlp-copy.json", Model.Replace("\"width\": 8", "\"width\": 4")),
        };
        var result = GeneratorHarness.Run(files);

        result.Exception.ShouldBeNull();
        result.GeneratedSources.Select(s => s.HintName).ShouldBe(new[] { "ModelCatalog.g.cs" });
        var errors = result.Diagnostics.Where(d => d.Id == DiagnosticIds.DuplicateName).OrderBy(d => d.Location.GetLineSpan().Path).ToList();
        errors.Count.ShouldBe(2, string.Join("\n", result.Diagnostics));
        errors[0].Location.GetLineSpan().Path.ShouldBe("/schemas/mlp-copy.json");
        errors[0].GetMessage().ShouldContain("also the name in mlp-small.json");
        errors[1].GetMessage().ShouldContain("also the name in mlp-copy.json");
        foreach (var error in errors) error.Location.GetLineSpan().StartLinePosition.Line.ShouldBe(LineOf(Model, "\"model\"") - 1);
    }

    [Fact]
    public void AnUnquantizedPatternThatNamesNoMatrixIsReportedAtItsLine()
    {
        string graph = Graph.Replace("\"body\": [", "\"unquantized\": [\"fc1\", \"fc9\"],\n  \"body\": [");
        var d = Single(Compile(graph), DiagnosticIds.UnknownWeight);
        d.Message.ShouldContain("'fc9' names no weight matrix");
        d.Span.Path.ShouldBe(GraphPath);
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "fc9"));
        // A bias is no matrix: a pattern that names only vectors is refused too.
        Single(Compile(Graph.Replace("\"body\": [", "\"unquantized\": [\"fc1.bias\"],\n  \"body\": [")), DiagnosticIds.UnknownWeight);
    }

    [Fact]
    public void AKeyRenameThatOccursInTheGraphsOwnKeysIsReportedAtItsLine()
    {
        string graph = Graph.Replace("\"body\": [", "\"key_renames\": { \"comment\": \"a note\", \"ffn1.\": \"fc1.\", \"c1.\": \"layer1.\" },\n  \"body\": [");
        var d = Single(Compile(graph), DiagnosticIds.InvalidSchema);
        d.Message.ShouldContain("'c1.' occurs in the graph's own key 'fc1.");
        (d.Span.Line + 1).ShouldBe(LineOf(graph, "key_renames"));
        Compile(Graph.Replace("\"body\": [", "\"key_renames\": { \"ffn1.\": \"fc1.\" },\n  \"body\": [")).ShouldBeEmpty();
    }
}

