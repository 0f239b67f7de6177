using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Emit;

/// <summary>Where a step of a fused backward kernel puts the gradient it produces.</summary>
internal enum BackwardTarget
{
    /// <summary>Nowhere: the next step is its only reader, so it stays in registers.</summary>
    Link,

    /// <summary>Into a new buffer that becomes the value's gradient.</summary>
    Assign,

    /// <summary>Added into the value's existing gradient (or a slice of it), read and stored in place.</summary>
    Accumulate,
}

/// <summary>What a fused backward kernel's operand holds.</summary>
internal enum BackwardOperandRole { InputGradient, ForwardValue, SegmentWeight, PerSample, RopeMatrices, Target }

/// <summary>One operand of a fused backward kernel: its role, the step it serves, and the value or weight behind it.</summary>
internal sealed record BackwardOperand(BackwardOperandRole Role, int Step, BoundValue? Value, BoundWeight? Weight);

/// <summary>
/// A backward group with the targets the emitter chose for it from the gradients that exist at its place in the pass,
/// and the operands that follow from them (A0, A1, … of the kernel, in the order the launch passes them).
/// </summary>
internal sealed class BackwardKernelLayout
{
    public BackwardKernelLayout(BackwardFusionGroup group, IReadOnlyList<BackwardTarget> targets, int sums, int accumulatingSums)
    {
        Group = group;
        Targets = targets;
        Sums = sums;
        AccumulatingSums = accumulatingSums;
        var operands = new List<BackwardOperand> { new(BackwardOperandRole.InputGradient, -1, group.First.Output, null) };
        for (int k = 0; k < group.Steps.Count; k++)
        {
            var op = group.Steps[k].Op;
            switch (group.Steps[k].Kind)
            {
                case BackwardStepKind.Modulate:
                    operands.Add(new(BackwardOperandRole.PerSample, k, op.Values["scale"], null));
                    break;
                case BackwardStepKind.GatedResidual:
                    operands.Add(new(BackwardOperandRole.PerSample, k, op.Values["gate"], null));
                    break;
                case BackwardStepKind.LayerNorm:
                    operands.Add(new(BackwardOperandRole.ForwardValue, k, op.Values["x"], null));
                    break;
                case BackwardStepKind.RmsNorm:
                    operands.Add(new(BackwardOperandRole.ForwardValue, k, op.Values["x"], null));
                    operands.Add(new(BackwardOperandRole.SegmentWeight, k, null, op.Weights["scale"]));
                    break;
                case BackwardStepKind.Rope:
                    operands.Add(new(BackwardOperandRole.RopeMatrices, k, op.Values["pe"], null));
                    break;
            }
            if (targets[k] != BackwardTarget.Link) operands.Add(new(BackwardOperandRole.Target, k, group.Steps[k].Input, null));
        }
        Operands = operands;
    }

    public BackwardFusionGroup Group { get; }
    public IReadOnlyList<BackwardTarget> Targets { get; }
    public IReadOnlyList<BackwardOperand> Operands { get; }

    /// <summary>The per-sample sums launched after the kernel, and how many of them add into an existing gradient.</summary>
    public int Sums { get; }
    public int AccumulatingSums { get; }

    private int Accumulations => Targets.Count(t => t == BackwardTarget.Accumulate);

    /// <summary>Tensor round trips the kernel saves: a link's gradient and an accumulation's temporary, each written and read again.</summary>
    public int SavedRoundTrips => Group.Links + Accumulations;

    /// <summary>
    /// Backend calls the group saves: unfused, one per rule and one add per accumulation (a sum's too); fused, the kernel
    /// and one call for all the sums.
    /// </summary>
    public int SavedCalls => Group.Steps.Count + Accumulations + AccumulatingSums - 1 - (Sums > 0 ? 1 : 0);

    public int IndexOf(BackwardOperandRole role, int step) => Operands.ToList().FindIndex(o => o.Role == role && o.Step == step);
}

/// <summary>
/// The ILGPU C# of one backward group: a kernel whose thread group handles one segment of one row, as the forward's
/// fused kernels do. Each normalisation step gets its statistics (of its forward input, and of the gradient reaching it)
/// from passes over the segment that recompute the chain up to that gradient; a last pass computes the whole chain and
/// stores the gradients that outlive the kernel. Every thread reads and writes only its own columns (a RoPE pair stays
/// with one thread), and every store comes after the last reduction, so a gradient may be added into in place. The
/// arithmetic is written in the unfused backward kernels' order, so only the reductions' grouping may differ.
/// </summary>
internal sealed class FusedBackwardEmitter
{
    private readonly BackwardKernelLayout _layout;
    private readonly BackwardFusionGroup _group;
    private readonly CodeWriter _w;

    private FusedBackwardEmitter(BackwardKernelLayout layout, CodeWriter writer)
    {
        _layout = layout;
        _group = layout.Group;
        _w = writer;
    }

    public static string KernelName(BackwardFusionGroup group) =>
        string.Concat(group.Steps.Select(s => CSharpNames.Pascal(s.Op.Definition.Name))) + "Backward" + group.Number;

    public static void Emit(BackwardKernelLayout layout, CodeWriter writer) => new FusedBackwardEmitter(layout, writer).EmitKernel();

    private int Lanes => _group.Lanes;

    private void EmitKernel()
    {
        _w.Line("/// <summary>");
        _w.Line($"/// Backward group {_group.Number}, over {Escape(_group.First.Output.ShapeText)} in segments of {_group.Segment} columns" +
                (Lanes > 1 ? $", {Lanes} adjacent columns per thread" : "") + $" (saves {_layout.SavedRoundTrips} round trips of the tensor and {_layout.SavedCalls} backend calls):");
        for (int k = 0; k < _group.Steps.Count; k++)
            _w.Line($"///   d {Escape(_group.Steps[k].Op.Describe())}: {TargetText(k)}");
        _w.Line("/// Operands: " + Escape(string.Join(", ", _layout.Operands.Select((o, i) => $"A{i} = {Describe(o)}"))) + ".");
        _w.Line("/// </summary>");
        _w.Open($"public static void {KernelName(_group)}(FusedLaunch p)");
        _w.Line("var partials = SharedMemory.Allocate<float>(FusedMath.MaxGroupSize);");
        _w.Line("long flatRow = Grid.IdxX / p.SegmentsPerRow;");
        _w.Line("int first = (Grid.IdxX - (int)(flatRow * p.SegmentsPerRow)) * p.Segment;");
        _w.Line(Lanes == 1 ? "int start = Group.IdxX;" : $"int start = Group.IdxX * {Lanes};");
        _w.Line(Lanes == 1 ? "int stride = Group.DimX;" : $"int stride = Group.DimX * {Lanes};");
        for (int k = 0; k < _group.Steps.Count; k++)
        {
            if (_group.Steps[k].Kind == BackwardStepKind.LayerNorm) EmitLayerNormStatistics(k);
            else if (_group.Steps[k].Kind == BackwardStepKind.RmsNorm) EmitRmsNormStatistics(k);
        }
        _w.Line("// The chain, storing the gradients that outlive the kernel.");
        OpenSegmentLoop();
        EmitChain(_group.Steps.Count, store: true);
        _w.Close();
        _w.Close();
    }

    private string TargetText(int k) => _layout.Targets[k] switch
    {
        BackwardTarget.Link => "passed on in registers",
        BackwardTarget.Assign => $"d{_group.Steps[k].Input.Name} stored",
        _ => $"added into d{_group.Steps[k].Input.Name}",
    };

    private static string Escape(string text) => text.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

    private static string Describe(BackwardOperand operand) => operand.Role switch
    {
        BackwardOperandRole.InputGradient => "d" + operand.Value!.Name + " " + operand.Value.ShapeText,
        BackwardOperandRole.SegmentWeight => operand.Weight!.LocalName + " (per segment column)",
        BackwardOperandRole.PerSample => operand.Value!.Name + " (per sample)",
        BackwardOperandRole.RopeMatrices => operand.Value!.Name + " (RoPE matrices)",
        BackwardOperandRole.Target => "d" + operand.Value!.Name + " (written)",
        _ => operand.Value!.Name + " " + operand.Value.ShapeText,
    };

    private string Operand(BackwardOperandRole role, int step) => $"p.A{_layout.IndexOf(role, step)}";

    private string Column(int lane) => lane == 0 ? "col" : $"col + {lane}";

    private static string Local(int index, int lane) => $"g{index}_{lane}";

    private string Forward(int step, int lane) => $"{Operand(BackwardOperandRole.ForwardValue, step)}.At(flatRow, {Column(lane)})";

    private void OpenSegmentLoop()
    {
        _w.Open("for (int c = start; c < p.Segment; c += stride)");
        _w.Line("int col = first + c;");
    }

    private void EmitLayerNormStatistics(int k)
    {
        string eps = Eps(k);
        _w.Line($"// layer_norm ({k + 1}): mean and inverse standard deviation of its input, then the means of its gradient and of gradient·x̂.");
        _w.Line($"float sum{k} = 0f;");
        OpenSegmentLoop();
        for (int lane = 0; lane < Lanes; lane++) _w.Line($"sum{k} += {Forward(k, lane)};");
        _w.Close();
        _w.Line($"float mean{k} = FusedMath.GroupSum(partials, sum{k}) / p.Segment;");
        _w.Line($"float squares{k} = 0f;");
        OpenSegmentLoop();
        for (int lane = 0; lane < Lanes; lane++)
        {
            _w.Line($"float d{k}_{lane} = {Forward(k, lane)} - mean{k};");
            _w.Line($"squares{k} += d{k}_{lane} * d{k}_{lane};");
        }
        _w.Close();
        _w.Line($"float rstd{k} = 1f / FusedMath.Sqrt(FusedMath.GroupSum(partials, squares{k}) / p.Segment + {eps});");
        _w.Line($"float dySum{k} = 0f, dyXhatSum{k} = 0f;");
        OpenSegmentLoop();
        EmitChain(k, store: false);
        for (int lane = 0; lane < Lanes; lane++)
        {
            _w.Line($"dySum{k} += {Local(k, lane)};");
            _w.Line($"dyXhatSum{k} += {Local(k, lane)} * (({Forward(k, lane)} - mean{k}) * rstd{k});");
        }
        _w.Close();
        _w.Line($"float meanDy{k} = FusedMath.GroupSum(partials, dySum{k}) / p.Segment;");
        _w.Line($"float meanDyXhat{k} = FusedMath.GroupSum(partials, dyXhatSum{k}) / p.Segment;");
    }

    private void EmitRmsNormStatistics(int k)
    {
        _w.Line($"// rms_norm ({k + 1}): inverse root mean square of its input and the projection of its scaled gradient on it.");
        _w.Line($"float squares{k} = 0f, dot{k} = 0f;");
        OpenSegmentLoop();
        EmitChain(k, store: false);
        for (int lane = 0; lane < Lanes; lane++)
        {
            _w.Line($"float x{k}_{lane} = {Forward(k, lane)};");
            _w.Line($"squares{k} += x{k}_{lane} * x{k}_{lane};");
            _w.Line($"dot{k} += {Local(k, lane)} * {ScaleAt(k, lane)} * x{k}_{lane};");
        }
        _w.Close();
        _w.Line($"float r{k} = 1f / FusedMath.Sqrt(FusedMath.GroupSum(partials, squares{k}) / p.Segment + {Eps(k)});");
        _w.Line($"float projection{k} = r{k} * r{k} * r{k} * FusedMath.GroupSum(partials, dot{k}) / p.Segment;");
    }

    private string ScaleAt(int k, int lane) => $"{Operand(BackwardOperandRole.SegmentWeight, k)}.At(0, {(lane == 0 ? "c" : $"c + {lane}")})";

    private string Eps(int k) => CSharpNames.Float(_group.Steps[k].Op.Attributes["eps"].Number!.Value);

    /// <summary>
    /// The gradients g0 (the chain's input) to g{upTo} at this thread's columns, as locals: g{k+1} is what step k
    /// produced, with the existing gradient added where the step accumulates; with <paramref name="store"/>, stored.
    /// </summary>
    private void EmitChain(int upTo, bool store)
    {
        for (int lane = 0; lane < Lanes; lane++)
            _w.Line($"float {Local(0, lane)} = {Operand(BackwardOperandRole.InputGradient, -1)}.At(flatRow, {Column(lane)});");
        for (int k = 0; k < upTo; k++)
        {
            EmitStep(k);
            var target = _layout.Targets[k];
            for (int lane = 0; lane < Lanes; lane++)
            {
                string t = $"t{k + 1}_{lane}";
                string value = target == BackwardTarget.Accumulate
                    ? $"{Operand(BackwardOperandRole.Target, k)}.At(flatRow, {Column(lane)}) + {t}"
                    : t;
                _w.Line($"float {Local(k + 1, lane)} = {value};");
                if (store && target != BackwardTarget.Link)
                    _w.Line($"{Operand(BackwardOperandRole.Target, k)}.Set(flatRow, {Column(lane)}, {Local(k + 1, lane)});");
            }
        }
    }

    /// <summary>Step k's own gradient t{k+1} from g{k}, in the unfused kernel's arithmetic.</summary>
    private void EmitStep(int k)
    {
        var step = _group.Steps[k];
        if (step.Kind == BackwardStepKind.Rope)
        {
            string matrices = Operand(BackwardOperandRole.RopeMatrices, k);
            _w.Line($"int pair{k + 1} = col % {step.HeadDim} / 2;");
            string M(int j) => $"{matrices}.At(flatRow, 4 * pair{k + 1} + {j})";
            // dx = Mᵀ·dy: the transpose of the forward's rotation.
            _w.Line($"float t{k + 1}_0 = {M(0)} * {Local(k, 0)} + {M(2)} * {Local(k, 1)};");
            _w.Line($"float t{k + 1}_1 = {M(1)} * {Local(k, 0)} + {M(3)} * {Local(k, 1)};");
            return;
        }
        for (int lane = 0; lane < Lanes; lane++)
        {
            string g = Local(k, lane);
            string expression = step.Kind switch
            {
                BackwardStepKind.Modulate => $"{g} * {Operand(BackwardOperandRole.PerSample, k)}.At(flatRow, {Column(lane)}) + {g}",
                BackwardStepKind.GatedResidual => $"{g} * {Operand(BackwardOperandRole.PerSample, k)}.At(flatRow, {Column(lane)})",
                BackwardStepKind.LayerNorm => $"({g} - meanDy{k} - ({Forward(k, lane)} - mean{k}) * rstd{k} * meanDyXhat{k}) * rstd{k}",
                _ => $"{g} * {ScaleAt(k, lane)} * r{k} - {Forward(k, lane)} * projection{k}",
            };
            _w.Line($"float t{k + 1}_{lane} = {expression};");
        }
    }
}
