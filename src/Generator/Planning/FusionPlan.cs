using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;

namespace InFluxEdit.Generator.Planning;

/// <summary>How a fused kernel addresses one of its inputs, given the group's flat row and column.</summary>
public enum FusedAddressing
{
    /// <summary>The element at the same flat row and column (same shape as the group).</summary>
    Element,

    /// <summary>A per-sample vector [B, C] repeated over the tokens of a sequence [B, L, C] (modulation, gates).</summary>
    OverTokens,

    /// <summary>A weight vector indexed by the column inside the segment (RMSNorm's per-head scale).</summary>
    SegmentWeight,

    /// <summary>RoPE's 2×2 matrices [B, L, head_dim/2·4] of the token, picked by the column's pair inside its head.</summary>
    RopeMatrices,
}

/// <summary>What an op does inside a fused kernel.</summary>
public enum FusedStepKind { Pointwise, LayerNorm, RmsNorm, Rope }

/// <summary>An input of a fused op other than the value the chain passes along.</summary>
public sealed record FusedInput(string Argument, BoundValue? Value, BoundWeight? Weight, FusedAddressing Addressing);

/// <summary>One op of a chain: the value it continues from, what it adds, and the segment it reduces over.</summary>
public sealed class FusedStep
{
    public FusedStep(BoundOp op, FusedStepKind kind, BoundValue chainInput, IReadOnlyList<FusedInput> inputs, long? segment, long? headDim)
    {
        Op = op;
        Kind = kind;
        ChainInput = chainInput;
        Inputs = inputs;
        Segment = segment;
        HeadDim = headDim;
    }

    public BoundOp Op { get; }
    public FusedStepKind Kind { get; }
    public BoundValue ChainInput { get; }
    public BoundValue Output => Op.Outputs[0];
    public IReadOnlyList<FusedInput> Inputs { get; }

    /// <summary>The columns one normalisation covers (a row for LayerNorm, a group for RMSNorm); null for the rest.</summary>
    public long? Segment { get; }

    /// <summary>For RoPE: the head width whose pairs its matrices rotate.</summary>
    public long? HeadDim { get; }

    /// <summary>
    /// The op as a fused step, or null where it cannot be one: only element-wise and row-wise ops over [rows, C] with
    /// a constant C, and not an op that writes a new buffer under its input's name (the forward rebinds that name).
    /// </summary>
    public static FusedStep? Of(BoundOp op, BufferPlan plan)
    {
        if (op.Outputs.Count != 1 || op.HasAdapter) return null;
        var output = op.Outputs[0];
        if (output.Shape.Count is < 2 or > 3 || !output.Shape[output.Shape.Count - 1].IsConstant) return null;
        if (!op.InPlace && plan.AllocatedBy(op) != null && BufferPlan.Reads(op).Any(v => v.EmitName == output.EmitName)) return null;
        FusedInput Same(string argument) => new(argument, op.Values[argument], null, FusedAddressing.Element);
        FusedInput OverTokens(string argument) => new(argument, op.Values[argument], null, FusedAddressing.OverTokens);
        long columns = output.Shape[output.Shape.Count - 1].Constant;
        switch (op.Definition)
        {
            case ModulateOp:
                return new FusedStep(op, FusedStepKind.Pointwise, op.Values["x"], new[] { OverTokens("shift"), OverTokens("scale") }, null, null);
            case GatedResidualOp:
                return new FusedStep(op, FusedStepKind.Pointwise, op.Values["residual"], new[] { Same("x"), OverTokens("gate") }, null, null);
            case AddOp:
                return new FusedStep(op, FusedStepKind.Pointwise, op.Values["a"], new[] { Same("b") }, null, null);
            case LayerNormOp when !(op.Weights.TryGetValue("scale", out var scale) && scale != null):
                return new FusedStep(op, FusedStepKind.LayerNorm, op.Values["x"], new FusedInput[0], columns, null);
            case RmsNormOp:
                return new FusedStep(op, FusedStepKind.RmsNorm, op.Values["x"],
                    new[] { new FusedInput("scale", null, op.Weights["scale"], FusedAddressing.SegmentWeight) },
                    op.Attributes["group"].ToInteger("group"), null);
            case RopeOp when output.Shape.Count == 3:
                return new FusedStep(op, FusedStepKind.Rope, op.Values["x"],
                    new[] { new FusedInput("pe", op.Values["pe"], null, FusedAddressing.RopeMatrices) }, null, op.Values["pe"].Shape[2].Constant * 2);
            default:
                return null;
        }
    }
}

/// <summary>
/// A chain of ops run as one kernel: each continues from the previous one's output. The kernel writes only the values
/// read after the group (the rest live in registers) and runs where the chain's last op stood.
/// </summary>
public sealed class FusionGroup
{
    public FusionGroup(int number, IReadOnlyList<FusedStep> steps, IReadOnlyList<BoundValue> writes, long segment, int lanes, long repeats)
    {
        Number = number;
        Steps = steps;
        Writes = writes;
        Segment = segment;
        Lanes = lanes;
        Repeats = repeats;
    }

    /// <summary>1-based, in the order the planner closed the chains; names the kernel.</summary>
    public int Number { get; }

    public IReadOnlyList<FusedStep> Steps { get; }
    public BoundValue Input => Steps[0].ChainInput;
    public BoundOp Last => Steps[Steps.Count - 1].Op;

    /// <summary>The chain's values that ops after the group read (or the entry returns), in chain order.</summary>
    public IReadOnlyList<BoundValue> Writes { get; }

    /// <summary>The columns one thread group reduces over (the row when nothing normalises).</summary>
    public long Segment { get; }

    /// <summary>Adjacent columns one thread handles: 2 where RoPE rotates pairs, else 1.</summary>
    public int Lanes { get; }

    /// <summary>How many times the group runs per call of its entry (the product of the enclosing repeat counts).</summary>
    public long Repeats { get; }

    /// <summary>
    /// The kernel's operands: the written values, then the chain's input, then every other input in first use, each
    /// once (a weight or a value); their order is the kernel's A0, A1, ….
    /// </summary>
    public IReadOnlyList<FusedInput> Operands => OperandsOf(Steps, Writes);

    internal static List<FusedInput> OperandsOf(IReadOnlyList<FusedStep> steps, IReadOnlyList<BoundValue> writes)
    {
        var operands = writes.Select(w => new FusedInput("out", w, null, FusedAddressing.Element)).ToList();
        var input = steps[0].ChainInput;
        operands.Add(new FusedInput("in", input, null, FusedAddressing.Element));
        var produced = new HashSet<BoundValue>(steps.Select(s => s.Output)) { input };
        foreach (var other in steps.SelectMany(s => s.Inputs))
        {
            if (other.Value != null && produced.Contains(other.Value)) continue;
            if (operands.Skip(writes.Count).Any(o => o.Value == other.Value && o.Weight == other.Weight)) continue;
            operands.Add(other);
        }
        return operands;
    }
}

/// <summary>
/// Stage 3b: fusion. Groups chains of element-wise and row-wise ops of one entry (modulate, gated residual, add,
/// LayerNorm, RMSNorm, RoPE) into kernels the emitter writes beside the model. A chain grows while the next
/// op continues from its last output with the same rows and columns; ops of other chains may stand between (q's and
/// k's norms and rotations interleave), provided none of them reads what the chain produces or writes what it
/// touches, because the fused kernel runs where the chain's last op stood. A pure function of the bound entry and its
/// buffer plan.
/// </summary>
public sealed class FusionPlan
{
    private readonly Dictionary<BoundOp, FusionGroup> _groupOf = new();
    private readonly List<FusionGroup> _groups = new();

    /// <summary>The operands one fused kernel may take (the runtime's FusedLaunch slots).</summary>
    public const int MaxOperands = 8;

    public IReadOnlyList<FusionGroup> Groups => _groups;

    /// <summary>The group an op belongs to, or null when it runs alone.</summary>
    public FusionGroup? GroupOf(BoundOp op) => _groupOf.TryGetValue(op, out var group) ? group : null;

    /// <summary>
    /// Element-wise and row-wise launches per call of the entry without fusion: every op's but the products' (linear,
    /// convolution), attention's and the views'; a concat copies each part.
    /// </summary>
    public long UnfusedLaunches { get; private set; }

    private static long LaunchesOf(BoundOp op) => op.Definition switch
    {
        LinearOp or Conv2dOp or AttentionOp or TapOp => 0,
        ConcatOp => op.ValueLists["xs"].Count,
        _ => op.Definition.OutputsAreViews ? 0 : 1,
    };

    /// <summary>The same launches with every group one kernel.</summary>
    public long FusedLaunches => UnfusedLaunches - _groups.Sum(g => (g.Steps.Count - 1) * g.Repeats);

    /// <summary>The plans of a model's entries, their kernels numbered through the model.</summary>
    public static IReadOnlyDictionary<BoundEntry, FusionPlan> CreateAll(IEnumerable<BoundEntry> entries, IReadOnlyDictionary<BoundEntry, BufferPlan> plans)
    {
        var result = new Dictionary<BoundEntry, FusionPlan>();
        int next = 1;
        foreach (var entry in entries)
        {
            var fusion = Create(entry, plans[entry], next);
            next += fusion.Groups.Count;
            result[entry] = fusion;
        }
        return result;
    }

    public static FusionPlan Create(BoundEntry entry, BufferPlan plan, int firstNumber = 1)
    {
        var planner = new Planner(entry, plan, firstNumber);
        planner.PlanScope(entry.Body, repeats: 1);
        return planner.Result;
    }

    private sealed class Chain
    {
        public readonly List<FusedStep> Steps = new();
        public readonly HashSet<BoundValue> Produced = new();
        public readonly HashSet<BoundValue> Touched = new();
        public readonly HashSet<string> Names = new();
        public long? Segment;
        public BoundValue Last => Steps[Steps.Count - 1].Output;
        public bool HasRope => Steps.Any(s => s.Kind == FusedStepKind.Rope);

        public void Add(FusedStep step)
        {
            Steps.Add(step);
            Produced.Add(step.Output);
            Segment ??= step.Segment;
            foreach (var value in BufferPlan.Reads(step.Op).Append(step.Output))
            {
                Touched.Add(value);
                Names.Add(value.EmitName);
            }
        }
    }

    private sealed class Planner
    {
        private readonly BoundEntry _entry;
        private readonly BufferPlan _plan;
        private readonly FusionPlan _result = new();
        private readonly Dictionary<BoundValue, List<BoundOp>> _readers = new();
        private readonly Dictionary<BoundValue, BoundValue> _region = new();
        private readonly Dictionary<BoundValue, BoundOp> _splitOf = new();
        private int _nextNumber;

        public Planner(BoundEntry entry, BufferPlan plan, int firstNumber)
        {
            _entry = entry;
            _plan = plan;
            _nextNumber = firstNumber;
            IndexReaders(entry.Body);
        }

        public FusionPlan Result => _result;

        private void IndexReaders(BoundScope scope)
        {
            foreach (var statement in scope.Statements)
            {
                if (statement is BoundRepeat repeat) IndexReaders(repeat.Body);
                if (statement is not BoundOp op) continue;
                foreach (var value in BufferPlan.Reads(op))
                {
                    if (!_readers.TryGetValue(value, out var list)) _readers[value] = list = new List<BoundOp>();
                    list.Add(op);
                }
                if (op.Definition.OutputsAreViews)
                    foreach (var output in op.Outputs) _splitOf[output] = op;
                string? alias = op.Definition.AliasableInput;
                if (op.InPlace && alias != null) _region[op.Outputs[0]] = RegionOf(op.Values[alias]);
            }
        }

        /// <summary>The memory a value occupies, as the value that first filled it (in-place updates keep the region).</summary>
        private BoundValue RegionOf(BoundValue value) => _region.TryGetValue(value, out var region) ? region : value;

        /// <summary>Whether two values may share memory: same storage, unless they are different parts of one split.</summary>
        private bool Overlap(BoundValue a, BoundValue b)
        {
            if (_plan.StorageOf(a) != _plan.StorageOf(b)) return false;
            var ra = RegionOf(a);
            var rb = RegionOf(b);
            if (ra == rb) return true;
            return !(_splitOf.TryGetValue(ra, out var sa) && _splitOf.TryGetValue(rb, out var sb) && sa == sb);
        }

        public void PlanScope(BoundScope scope, long repeats)
        {
            var open = new List<Chain>();
            foreach (var statement in scope.Statements)
            {
                if (statement is BoundRepeat repeat)
                {
                    foreach (var chain in open) Close(chain, repeats);
                    open.Clear();
                    PlanScope(repeat.Body, repeats * repeat.Count);
                    continue;
                }
                if (statement is not BoundOp op) continue;
                var step = FusedStep.Of(op, _plan);
                _result.UnfusedLaunches += LaunchesOf(op) * repeats;
                var extended = step == null ? null : open.FirstOrDefault(c => c.Last == step.ChainInput && Fits(c, step));
                foreach (var chain in open.Where(c => c != extended && Conflicts(op, c)).ToList())
                {
                    Close(chain, repeats);
                    open.Remove(chain);
                }
                if (extended != null) extended.Add(step!);
                else if (step != null)
                {
                    var chain = new Chain();
                    chain.Add(step);
                    open.Add(chain);
                }
            }
            foreach (var chain in open) Close(chain, repeats);
        }

        /// <summary>Same rows and columns, one segment width for every norm, at most the launcher's operand count.</summary>
        private bool Fits(Chain chain, FusedStep step)
        {
            if (!ShapeRules.Same(chain.Last.Shape, step.Output.Shape)) return false;
            if (step.Segment != null && chain.Segment != null && step.Segment != chain.Segment) return false;
            long segment = step.Segment ?? chain.Segment ?? Columns(step.Output);
            if (step.Kind == FusedStepKind.Rope || chain.HasRope)
            {
                long? headDim = step.HeadDim ?? chain.Steps.First(s => s.Kind == FusedStepKind.Rope).HeadDim;
                // A thread rotates a pair it holds whole: segments must hold whole heads or lie inside one.
                if (segment % 2 != 0 || (segment % headDim!.Value != 0 && headDim.Value % segment != 0)) return false;
            }
            var candidate = new Chain();
            foreach (var s in chain.Steps.Append(step)) candidate.Add(s);
            return FusionGroup.OperandsOf(candidate.Steps, Writes(candidate)).Count <= MaxOperands;
        }

        /// <summary>Whether a statement standing after a chain's ops must see their results, or changes what they read.</summary>
        private bool Conflicts(BoundOp op, Chain chain)
        {
            var reads = BufferPlan.Reads(op).ToList();
            if (reads.Any(chain.Produced.Contains)) return true;
            if (op.Outputs.Any(o => chain.Names.Contains(o.EmitName))) return true;
            if (reads.Any(r => chain.Produced.Any(p => Overlap(r, p)))) return true;
            if (!op.Definition.OutputsAreViews && op.Outputs.Any(o => chain.Touched.Any(t => Overlap(o, t)))) return true;
            return false;
        }

        private List<BoundValue> Writes(Chain chain)
        {
            var members = new HashSet<BoundOp>(chain.Steps.Select(s => s.Op));
            return chain.Steps.Select(s => s.Output)
                .Where(v => v == chain.Last || v.IsCarriedOutOfBlock || _entry.Outputs.Contains(v)
                            || (_readers.TryGetValue(v, out var readers) && readers.Any(r => !members.Contains(r))))
                .ToList();
        }

        private void Close(Chain chain, long repeats)
        {
            if (chain.Steps.Count < 2) return;
            var last = chain.Last;
            int lanes = chain.HasRope ? 2 : 1;
            var group = new FusionGroup(_nextNumber++, chain.Steps.ToList(), Writes(chain), chain.Segment ?? Columns(last), lanes, repeats);
            _result._groups.Add(group);
            foreach (var step in chain.Steps) _result._groupOf[step.Op] = group;
        }

        private static long Columns(BoundValue value) => value.Shape[value.Shape.Count - 1].Constant;
    }
}
