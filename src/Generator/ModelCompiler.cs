using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Emit;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Parsing;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator;

/// <summary>The generated source of one model, or why there is none; compared by value for incremental caching.</summary>
public sealed record CompiledModelSource(string ClassName, string HintName, string? Source, EquatableArray<SchemaDiagnostic> Diagnostics);

/// <summary>A model file's "model" name, to find names that several files claim.</summary>
public sealed record ModelNameSpec(string ClassName, string FileName);

/// <summary>The stages run in order for one model file: bind (shapes), plan (memory), emit (C#).</summary>
public static class ModelCompiler
{
    /// <param name="allModels">Every model file's name; another file with this one's name fails both.</param>
    public static CompiledModelSource Compile(ModelFileSpec model, EquatableArray<GraphSpec> graphs, EquatableArray<ModelNameSpec> allModels = default)
    {
        string hint = model.ClassName.Length > 0 ? model.ClassName + ".g.cs" : model.FileName + ".g.cs";
        var diagnostics = new List<SchemaDiagnostic>(model.Diagnostics);
        if (diagnostics.Count > 0) return Failed();

        var sameName = allModels
            .Where(m => m.ClassName == model.ClassName && m.FileName != model.FileName).Select(m => m.FileName).ToList();
        if (sameName.Count > 0)
        {
            diagnostics.Add(new SchemaDiagnostic(DiagnosticIds.DuplicateName,
                $"\"model\": \"{model.ClassName}\" is also the name in {string.Join(", ", sameName)}: give each schema file its own model name",
                model.ClassNameSpan));
            return Failed();
        }

        var candidates = graphs.Where(g => g.Name == model.GraphName).ToList();
        if (candidates.Count != 1)
        {
            string known = string.Join(", ", graphs.Select(g => $"\"{g.Name}\"").OrderBy(n => n, System.StringComparer.Ordinal));
            diagnostics.Add(new SchemaDiagnostic(DiagnosticIds.MissingGraph, candidates.Count == 0
                ? $"no graph named \"{model.GraphName}\" in schemas/graphs (known: {(known.Length == 0 ? "none" : known)})"
                : $"{candidates.Count} graph files are named \"{model.GraphName}\"", model.GraphSpan));
            return Failed();
        }
        var graph = candidates[0];
        // A broken graph is reported once, by the graph itself, not again by each model using it.
        if (graph.Diagnostics.Count > 0) return Failed();

        var (bound, bindDiagnostics) = GraphBinder.Bind(model, graph);
        diagnostics.AddRange(bindDiagnostics);
        if (bound == null) return Failed();

        var plans = bound.Entries.ToDictionary(entry => entry, entry => BufferPlan.Create(entry));
        foreach (var plan in plans.Values) diagnostics.AddRange(plan.Diagnostics);
        if (diagnostics.Count > 0) return Failed();

        var training = graph.Trainable.Count > 0 ? BindTraining(model, graph, diagnostics) : null;
        if (diagnostics.Count > 0) return Failed();

        var fusion = FusionPlan.CreateAll(bound.Entries, plans);
        return new CompiledModelSource(model.ClassName, hint, ModelEmitter.Emit(bound, plans, training, fusion), EquatableArray<SchemaDiagnostic>.Empty);

        CompiledModelSource Failed() => new(model.ClassName, hint, null, diagnostics.ToEquatableArray());
    }

    /// <summary>
    /// The training passes of a graph that names trainable layers: the model bound again with every loop unrolled, one
    /// pass per entry (a VAE's encode and decode train separately), each refused where a gradient would have to cross
    /// an op without a backward rule.
    /// </summary>
    private static IReadOnlyList<ModelEmitter.TrainingPass>? BindTraining(ModelFileSpec model, GraphSpec graph, List<SchemaDiagnostic> diagnostics)
    {
        var (unrolled, unrolledDiagnostics) = GraphBinder.Bind(model, graph, unrollLoops: true);
        diagnostics.AddRange(unrolledDiagnostics);
        if (unrolled == null) return null;
        var passes = new List<ModelEmitter.TrainingPass>();
        foreach (var entry in unrolled.Entries)
        {
            if (entry.Outputs.Count != 1)
            {
                diagnostics.Add(new SchemaDiagnostic(DiagnosticIds.InvalidSchema,
                    $"a trainable graph's entries must have one output each (the prediction the loss reads); '{entry.Name}' has {entry.Outputs.Count}",
                    model.GraphSpan));
                return null;
            }
            var gradients = Autodiff.GradientPlan.Create(entry);
            foreach (var op in Autodiff.GradientPlan.MissingRules(entry, gradients).GroupBy(o => o.Definition.Name).Select(g => g.First()))
                diagnostics.Add(new SchemaDiagnostic(DiagnosticIds.InvalidSchema,
                    $"op '{op.Definition.Name}' has no backward rule, but gradients of the trainable layers flow through it", op.Span));
            passes.Add(new ModelEmitter.TrainingPass(unrolled, entry, BufferPlan.Create(entry, keepActivations: true)));
        }
        return passes;
    }

    /// <summary>The catalog of every model of the build, so tools can pick one by name or by checkpoint.</summary>
    public static string EmitCatalog(IEnumerable<string> classNames)
    {
        var w = new CodeWriter();
        w.Line("// <auto-generated/>");
        w.Line("// Generated by InFluxEdit.Generator: one entry per schemas/*.json model.");
        w.Line("#nullable enable");
        w.Line();
        w.Line("using System.Collections.Generic;");
        w.Line("using InFluxEdit.Runtime.Models;");
        w.Line();
        w.Line("namespace InFluxEdit.Models;");
        w.Line();
        w.Open("public static class ModelCatalog");
        w.Line("public static IReadOnlyList<CompiledModelInfo> All { get; } = new CompiledModelInfo[]");
        w.Line("{");
        foreach (string name in classNames.OrderBy(n => n, System.StringComparer.Ordinal))
            w.Line($"    new({name}.Descriptor, (backend, weights) => new {name}(backend, weights)),");
        w.Line("};");
        w.Close();
        return w.ToString();
    }
}
