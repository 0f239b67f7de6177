using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Autodiff;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;

namespace InFluxEdit.Generator.Planning;

/// <summary>What one op's backward rule does inside a fused backward kernel.</summary>
public enum BackwardStepKind { Modulate, LayerNorm, RmsNorm, Rope, GatedResidual }

/// <summary>
/// One op's backward rule as a step of a chain: it reads the gradient of the op's output and produces the gradient of
/// <see cref="Input"/>, which the next step (the op that computed <see cref="Input"/>) continues from. Modulate and
/// gated residual also reduce per sample over the tokens (Σ dy, Σ dy·x); those sums run as separate deterministic
/// launches that read the materialised dy, so modulate may only open a chain (its dy is the chain's input gradient)
/// and gated residual may only close one (its dy is the residual stream's gradient, which the kernel stores anyway).
/// </summary>
public sealed class BackwardStep
{
    private BackwardStep(BoundOp op, BackwardStepKind kind, long? segment, long? headDim)
    {
        Op = op;
        Kind = kind;
        Segment = segment;
        HeadDim = headDim;
    }

    public BoundOp Op { get; }
    public BackwardStepKind Kind { get; }

    /// <summary>The value whose gradient the step reads.</summary>
    public BoundValue Output => Op.Outputs[0];

    /// <summary>The value whose gradient the step produces (gated residual: the gated branch; the residual's is dy).</summary>
    public BoundValue Input => Op.Values["x"];

    /// <summary>The columns one normalisation reduces over (a row for LayerNorm, a head for RMSNorm); null for the rest.</summary>
    public long? Segment { get; }

    /// <summary>For RoPE: the head width whose pairs its matrices rotate.</summary>
    public long? HeadDim { get; }

    public bool OpensOnly => Kind == BackwardStepKind.Modulate;
    public bool ClosesOnly => Kind == BackwardStepKind.GatedResidual;

    /// <summary>
    /// The op's backward as a step, or null where it cannot be one: only the element-wise and row-wise rules over
    /// [B, L, C] with a constant C whose input needs a gradient. A LayerNorm with a learned scale, and an RMSNorm whose
    /// scale may be trained, keep their own rules for the scale's gradient; the emitter runs an RMSNorm group fused only
    /// while the run trains no norm scale.
    /// </summary>
    public static BackwardStep? Of(BoundOp op, GradientPlan gradients)
    {
        if (op.Outputs.Count != 1 || !op.Values.TryGetValue("x", out var x) || !gradients.NeedsGradient(x)) return null;
        var output = op.Outputs[0];
        if (output.Shape.Count != 3 || !output.Shape[2].IsConstant || !gradients.NeedsGradient(output)) return null;
        long columns = output.Shape[2].Constant;
        switch (op.Definition)
        {
            case ModulateOp:
                return new BackwardStep(op, BackwardStepKind.Modulate, null, null);
            case GatedResidualOp:
                return new BackwardStep(op, BackwardStepKind.GatedResidual, null, null);
            case LayerNormOp when !(op.Weights.TryGetValue("scale", out var scale) && scale != null):
                return new BackwardStep(op, BackwardStepKind.LayerNorm, columns, null);
            case RmsNormOp:
                return new BackwardStep(op, BackwardStepKind.RmsNorm, op.Attributes["group"].ToInteger("group"), null);
            case RopeOp:
                return new BackwardStep(op, BackwardStepKind.Rope, null, op.Values["pe"].Shape[2].Constant * 2);
            default:
                return null;
        }
    }
}

/// <summary>
/// A chain of backward steps run as one kernel where the chain's last step stands in the backward pass. The gradient
/// each step produces stays in registers, unless it is added into a gradient that already exists (the residual stream's,
/// a slice of a fused projection's), which the kernel then reads and stores in place, or it is the last step's.
/// </summary>
public sealed class BackwardFusionGroup
{
    public BackwardFusionGroup(int number, IReadOnlyList<BackwardStep> steps, long segment, int lanes)
    {
        Number = number;
        Steps = steps;
        Segment = segment;
        Lanes = lanes;
    }

    /// <summary>Numbered after the model's forward groups; names the kernel.</summary>
    public int Number { get; }

    /// <summary>In backward order: the first reads the chain's input gradient (the gradient of its op's output).</summary>
    public IReadOnlyList<BackwardStep> Steps { get; }

    public BackwardStep First => Steps[0];
    public BackwardStep Last => Steps[Steps.Count - 1];

    /// <summary>The columns one thread group reduces over (the row when nothing normalises).</summary>
    public long Segment { get; }

    /// <summary>Adjacent columns one thread handles: 2 where RoPE rotates pairs, else 1.</summary>
    public int Lanes { get; }

    /// <summary>Whether the group's RMSNorm scales must not be trained for the kernel to stand in for the rules.</summary>
    public IEnumerable<BoundWeight> UntrainedScales =>
        Steps.Where(s => s.Kind == BackwardStepKind.RmsNorm && s.Op.IsTrainable).Select(s => s.Op.Weights["scale"]!);

    /// <summary>
    /// Gradients passed from one step to the next inside the kernel: each would otherwise be written by one backward op
    /// and read again by the next, one round trip of the [rows, C] tensor through memory.
    /// </summary>
    public int Links => Steps.Count - 1;
}

/// <summary>
/// Stage 3c: fusion of the training pass's backward. Walks the backward order (the ops in reverse) of one training
/// entry and groups chains of element-wise and row-wise backward rules (modulate, LayerNorm, RMSNorm, RoPE, gated
/// residual) over the same rows into kernels the emitter writes beside the model. A chain grows while the next step
/// is the op that computed the value whose gradient the chain holds, with the same shape and segment; backward rules
/// of other chains may stand between (q's and k's rotations and norms interleave) provided none of them reads or writes
/// a gradient the chain touches. Chains stop at the boundaries of recomputed blocks, where the backward runs a block's
/// forward again. A chain of one step stays the op's own rule: every group of two or more keeps at least one
/// gradient in registers and adds into an existing gradient without a temporary (each a round trip of a [rows, C]
/// tensor through memory), and saves at least two launches. A pure function of the entry and its gradient plan.
/// </summary>
public sealed class BackwardFusionPlan
{
    private readonly Dictionary<BoundOp, BackwardFusionGroup> _groupOf = new();
    private readonly List<BackwardFusionGroup> _groups = new();

    /// <summary>The operands one fused kernel may take (the runtime's FusedLaunch slots).</summary>
    public const int MaxOperands = FusionPlan.MaxOperands;

    public IReadOnlyList<BackwardFusionGroup> Groups => _groups;

    /// <summary>The group an op's backward rule belongs to, or null when it runs alone.</summary>
    public BackwardFusionGroup? GroupOf(BoundOp op) => _groupOf.TryGetValue(op, out var group) ? group : null;

    public static BackwardFusionPlan Create(BoundEntry entry, GradientPlan gradients, int firstNumber = 1)
    {
        var plan = new BackwardFusionPlan();
        var statements = entry.Body.Statements;
        var boundaries = new HashSet<int>();
        for (int i = 0; i < statements.Count; i++)
            if (statements[i] is BoundComment { BlockLength: > 0 } marker)
            {
                boundaries.Add(i);
                boundaries.Add(i + 1 + marker.BlockLength);
            }

        int next = firstNumber;
        var open = new List<Chain>();
        void CloseAll()
        {
            foreach (var chain in open) plan.Close(chain, ref next);
            open.Clear();
        }
        for (int i = statements.Count - 1; i >= 0; i--)
        {
            if (boundaries.Contains(i + 1)) CloseAll();
            if (statements[i] is not BoundOp op) continue;
            var step = BackwardStep.Of(op, gradients);
            var extended = step == null ? null : open.FirstOrDefault(c => c.Continues(step));
            foreach (var chain in open.Where(c => c != extended && c.ConflictsWith(op)).ToList())
            {
                plan.Close(chain, ref next);
                open.Remove(chain);
            }
            if (extended != null) extended.Add(step!);
            else if (step != null && !step.ClosesOnly) open.Add(new Chain(step, gradients));
        }
        CloseAll();
        return plan;
    }

    private void Close(Chain chain, ref int next)
    {
        if (chain.Steps.Count < 2) return;
        var group = new BackwardFusionGroup(next++, chain.Steps.ToList(), chain.Segment ?? chain.Columns, chain.HasRope ? 2 : 1);
        _groups.Add(group);
        foreach (var step in chain.Steps) _groupOf[step.Op] = group;
    }

    /// <summary>The gradients a backward rule reads (its outputs') and writes (its inputs'), by the buffer that holds them.</summary>
    private static IEnumerable<BoundValue> GradientsTouched(BoundOp op, GradientPlan gradients) =>
        op.Outputs.Concat(BufferPlan.Reads(op)).Where(gradients.NeedsGradient).Select(v => v.Root);

    private sealed class Chain
    {
        public readonly List<BackwardStep> Steps = new();
        private readonly HashSet<BoundValue> _touched = new();
        public long? Segment;

        private readonly GradientPlan _gradients;

        public Chain(BackwardStep first, GradientPlan gradients)
        {
            _gradients = gradients;
            Add(first);
        }

        public long Columns => Steps[0].Output.Shape[2].Constant;
        public bool HasRope => Steps.Any(s => s.Kind == BackwardStepKind.Rope);
        private bool Closed => Steps[Steps.Count - 1].ClosesOnly;

        public void Add(BackwardStep step)
        {
            Steps.Add(step);
            Segment ??= step.Segment;
            foreach (var value in GradientsTouched(step.Op, _gradients)) _touched.Add(value);
        }

        /// <summary>The step computes the value whose gradient the chain holds, over the same rows, columns and segments.</summary>
        public bool Continues(BackwardStep step)
        {
            if (Closed || step.OpensOnly || step.Output != Steps[Steps.Count - 1].Input) return false;
            if (!ShapeRules.Same(step.Output.Shape, Steps[0].Output.Shape)) return false;
            if (step.Segment != null && Segment != null && step.Segment != Segment) return false;
            long segment = step.Segment ?? Segment ?? Columns;
            if (step.Kind == BackwardStepKind.Rope || HasRope)
            {
                long headDim = (step.HeadDim ?? Steps.First(s => s.Kind == BackwardStepKind.Rope).HeadDim)!.Value;
                // A thread rotates a pair it holds whole: segments must hold whole heads or lie inside one.
                if (segment % 2 != 0 || (segment % headDim != 0 && headDim % segment != 0)) return false;
            }
            return BackwardOperands.Count(Steps.Append(step).ToList()) <= MaxOperands;
        }

        /// <summary>Whether another op's backward rule, run between the chain's steps, reads or writes a gradient the chain touches.</summary>
        public bool ConflictsWith(BoundOp op) => GradientsTouched(op, _gradients).Any(_touched.Contains);
    }
}

/// <summary>The distinct tensors a fused backward kernel addresses, counted as the emitter lays them out.</summary>
public static class BackwardOperands
{
    /// <summary>
    /// The chain's input gradient; per step its forward values and weights (LayerNorm's and RMSNorm's x, the scale,
    /// RoPE's matrices, modulate's scale, the gate) and the gradient it produces (one buffer, read when added into).
    /// </summary>
    public static int Count(IReadOnlyList<BackwardStep> steps) => 1 + steps.Sum(s => s.Kind switch
    {
        BackwardStepKind.Modulate => 2,
        BackwardStepKind.LayerNorm => 2,
        BackwardStepKind.RmsNorm => 3,
        BackwardStepKind.Rope => 2,
        _ => 2,
    });
}
