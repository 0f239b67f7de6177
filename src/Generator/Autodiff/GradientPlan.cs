using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Autodiff;

/// <summary>
/// Which values the backward pass needs gradients of: those computed, directly or not, from a trainable layer's
/// output or from an input whose gradient the caller asked for ("input_gradients"). Gradients stop there: a frozen weight gets none, and values made only from inputs (positions, time
/// embeddings of a frozen embedder) cost nothing in the backward pass.
/// </summary>
public sealed class GradientPlan
{
    private readonly HashSet<BoundValue> _needsGradient = new();
    private readonly Dictionary<BoundValue, BoundOp> _splitOf = new();

    public static GradientPlan Create(BoundEntry entry)
    {
        var plan = new GradientPlan();
        // An input whose gradient the caller wants (a decoder's latent) is a source like a trainable layer.
        foreach (var input in entry.InputGradients) plan._needsGradient.Add(input);
        foreach (var op in entry.Body.Statements.OfType<BoundOp>())
        {
            if (op.Definition is SplitOp)
                foreach (var output in op.Outputs) plan._splitOf[output] = op;
            if (op.IsTrainable || BufferPlan.Reads(op).Any(plan._needsGradient.Contains))
                foreach (var output in op.Outputs) plan._needsGradient.Add(output);
        }
        return plan;
    }

    public bool NeedsGradient(BoundValue value) => _needsGradient.Contains(value);

    /// <summary>The split that made a view, to find its slice of the whole's gradient.</summary>
    public BoundOp SplitOf(BoundValue view) => _splitOf[view];

    /// <summary>Ops on a gradient path that have no backward rule.</summary>
    public static IEnumerable<BoundOp> MissingRules(BoundEntry entry, GradientPlan plan) =>
        entry.Body.Statements.OfType<BoundOp>()
            .Where(op => !op.Definition.HasBackwardFor(op) && (op.IsTrainable || BufferPlan.Reads(op).Any(plan.NeedsGradient)));
}
