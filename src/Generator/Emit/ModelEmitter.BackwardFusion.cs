using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Autodiff;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Emit;

/// <summary>
/// The training pass's fused backward groups: where a group's last step stands, its kernel on the ILGPU backend, then
/// the per-sample sums of its modulate and gated residual (all of a group in one pair of deterministic column-sum
/// launches); else the steps' backward ops one by one. The gradients the group leaves behind are declared before the
/// branch, so both branches fill the same buffers and the rest of the pass reads them alike.
/// </summary>
public sealed partial class ModelEmitter
{
    private Dictionary<BoundEntry, BackwardFusionPlan>? _backwardPlans;
    private BackwardFusionPlan? _backwardFusion;
    private readonly List<BackwardKernelLayout> _backwardKernels = new();

    /// <summary>Each training pass's backward plan, its kernels numbered after the forward's.</summary>
    private IReadOnlyDictionary<BoundEntry, BackwardFusionPlan> BackwardPlans
    {
        get
        {
            if (_backwardPlans != null) return _backwardPlans;
            _backwardPlans = new Dictionary<BoundEntry, BackwardFusionPlan>();
            int next = 1 + _fusionPlans.Values.Sum(plan => plan.Groups.Count);
            foreach (var pass in _trainingPasses)
            {
                var plan = BackwardFusionPlan.Create(pass.Entry, GradientPlan.Create(pass.Entry), next);
                next += plan.Groups.Count;
                _backwardPlans[pass.Entry] = plan;
            }
            return _backwardPlans;
        }
    }

    private bool HasBackwardFusion => BackwardPlans.Values.Any(plan => plan.Groups.Count > 0);

    /// <summary>The header line of each training pass whose backward has fused groups.</summary>
    private void EmitBackwardFusionSummary()
    {
        foreach (var pass in _trainingPasses)
        {
            var groups = BackwardPlans[pass.Entry].Groups;
            if (groups.Count == 0) continue;
            _w.Line($"// Backward fusion: {TrainingMethod(pass.Entry)} runs {groups.Sum(g => g.Steps.Count)} backward rules as {groups.Count} kernels on the ILGPU backend.");
        }
    }

    /// <summary>A member of a backward group: nothing where it stands but a pointer, the whole group at its last step.</summary>
    private bool EmitFusedBackward(BoundOp op)
    {
        var group = _backwardFusion?.GroupOf(op);
        if (group == null) return false;
        if (group.Last.Op != op)
        {
            _w.Line($"// d {op.Describe()}: in backward group {group.Number}, below.");
            return true;
        }
        EmitBackwardGroup(group);
        return true;
    }

    private void EmitBackwardGroup(BackwardFusionGroup group)
    {
        _w.Line($"// Backward group {group.Number}: " + string.Join(" > ", group.Steps.Select(s => "d " + s.Op.Definition.Name)) + ".");
        string dy = Gradient(group.First.Output);

        // Where each step's gradient goes, from the gradients that exist here; new ones are declared before the branch.
        var targets = new List<BackwardTarget>();
        var targetViews = new List<string?>();
        for (int k = 0; k < group.Steps.Count; k++)
        {
            var input = group.Steps[k].Input;
            bool isNew = input.ViewOf == null && !_gradientNames.ContainsKey(input);
            bool nextReadsOnly = k + 1 < group.Steps.Count && group.Steps[k + 1].Kind != BackwardStepKind.GatedResidual;
            if (isNew && nextReadsOnly)
            {
                targets.Add(BackwardTarget.Link);
                targetViews.Add(null);
                continue;
            }
            if (isNew)
            {
                string name = DeclareGradientName(input);
                _w.Line($"var {name} = Allocate({string.Join(", ", input.Shape.Select(Dim))});");
                _gradientNames[input] = name;
                targets.Add(BackwardTarget.Assign);
            }
            else targets.Add(BackwardTarget.Accumulate);
            targetViews.Add(Gradient(input));
        }
        var sums = PerSampleSums(group);
        var layout = new BackwardKernelLayout(group, targets, sums.Count, sums.Count(s => s.Accumulates));
        _backwardKernels.Add(layout);

        var shape = group.First.Output;
        string Operand(BackwardOperand operand) => operand.Role switch
        {
            BackwardOperandRole.InputGradient => dy,
            BackwardOperandRole.Target => targetViews[operand.Step]!,
            BackwardOperandRole.PerSample => $"{View(operand.Value!)}.BroadcastRows({Dim(shape.Shape[1])})",
            BackwardOperandRole.SegmentWeight => Weight(operand.Weight!),
            BackwardOperandRole.RopeMatrices => RopeMatrices(operand.Value!),
            _ => View(operand.Value!),
        };
        string condition = string.Concat(group.UntrainedScales.Select(scale => $" && WeightGradient({WeightKey(scale)}) == null"));
        _w.Open($"if (_fused != null{condition})");
        _w.Line($"_fused.Launch(FusedKernels.{FusedBackwardEmitter.KernelName(group)}, {dy}, {group.Segment}, {group.Lanes}, " +
                string.Join(", ", layout.Operands.Select(Operand)) + ");");
        if (sums.Count > 0)
            _w.Line("_fused.SumRows(" + string.Join(", ", sums.Select(sum =>
                $"new FusedColumnSum({sum.Target}, {(sum.Step == 0 ? dy : targetViews[sum.Step - 1])}, " +
                $"{(sum.Factor == null ? "null" : View(sum.Factor))}, {(sum.Accumulates ? "1f" : "0f")})")) + ");");
        _w.Close();
        _w.Open("else");
        EmitUnfusedBackwardGroup(group, dy, targets, targetViews, sums);
        _w.Close();

        foreach (var step in group.Steps)
            if (step.Kind == BackwardStepKind.GatedResidual) PassGradient(step.Op.Values["residual"], step.Output);
        foreach (var step in group.Steps)
            foreach (var o in step.Op.Outputs.Where(o => o.ViewOf == null && _gradientNames.ContainsKey(o)))
            {
                _w.Line($"{_gradientNames[o]}.Dispose();");
                _gradientNames.Remove(o);
            }
    }

    /// <summary>
    /// A per-sample gradient of a group (modulate's shift and scale, the gate): Σ over tokens of step's dy (times
    /// <see cref="Factor"/>, a forward value) into <see cref="Target"/>, added there or assigning a new buffer.
    /// </summary>
    private sealed record PerSampleSum(int Step, string Argument, BoundValue? Factor, string Target, bool Accumulates);

    private List<PerSampleSum> PerSampleSums(BackwardFusionGroup group)
    {
        var sums = new List<PerSampleSum>();
        for (int k = 0; k < group.Steps.Count; k++)
        {
            var op = group.Steps[k].Op;
            var pairs = group.Steps[k].Kind switch
            {
                BackwardStepKind.Modulate => new[] { ("shift", (BoundValue?)null), ("scale", op.Values["x"]) },
                BackwardStepKind.GatedResidual => new[] { ("gate", (BoundValue?)op.Values["x"]) },
                _ => System.Array.Empty<(string, BoundValue?)>(),
            };
            foreach (var (argument, factor) in pairs)
            {
                var vector = op.Values[argument];
                if (!NeedsGradient(vector)) continue;
                bool isNew = vector.ViewOf == null && !_gradientNames.ContainsKey(vector);
                if (isNew)
                {
                    string name = DeclareGradientName(vector);
                    _w.Line($"var {name} = Allocate({string.Join(", ", vector.Shape.Select(Dim))});");
                    _gradientNames[vector] = name;
                }
                sums.Add(new PerSampleSum(k, argument, factor, Gradient(vector), !isNew));
            }
        }
        return sums;
    }

    private string RopeMatrices(BoundValue pe) =>
        $"{View(pe)}.Reshape({Dim(pe.Shape[0])}, {Dim(pe.Shape[1])}, {pe.Shape[2].Constant * 4})";

    /// <summary>
    /// The group's steps as the backward ops they stand for, into the buffers declared for the fused branch:
    /// temporaries where a gradient is added into an existing one or passed on in registers.
    /// </summary>
    private void EmitUnfusedBackwardGroup(BackwardFusionGroup group, string dy, IReadOnlyList<BackwardTarget> targets,
        IReadOnlyList<string?> targetViews, IReadOnlyList<PerSampleSum> sums)
    {
        var temporaries = new List<string>();
        string Temporary(BoundValue like)
        {
            string name = this.Temporary(like);
            temporaries.Add(name);
            return name;
        }
        string gradient = dy;
        for (int k = 0; k < group.Steps.Count; k++)
        {
            var step = group.Steps[k];
            var op = step.Op;
            var x = op.Values["x"];
            string output = targets[k] == BackwardTarget.Assign ? targetViews[k]! : Temporary(x);
            string eps = op.Attributes.TryGetValue("eps", out var epsilon) ? Float(epsilon.Number!.Value) : "";
            string SumOutput(string argument)
            {
                var sum = sums.FirstOrDefault(s => s.Step == k && s.Argument == argument);
                return sum != null && !sum.Accumulates ? sum.Target : Temporary(op.Values[argument]);
            }
            switch (step.Kind)
            {
                case BackwardStepKind.Modulate:
                {
                    string shift = SumOutput("shift"), scale = SumOutput("scale");
                    _w.Line($"Backward.ModulateBackward({output}, {shift}, {scale}, {gradient}, {View(x)}, {View(op.Values["scale"])}.BroadcastRows({Dim(x.Shape[1])}));");
                    AddSums(k, ("shift", shift), ("scale", scale));
                    break;
                }
                case BackwardStepKind.GatedResidual:
                {
                    string gate = SumOutput("gate");
                    _w.Line($"Backward.GatedResidualBackward({output}, {gate}, {gradient}, {View(x)}, {View(op.Values["gate"])}.BroadcastRows({Dim(x.Shape[1])}));");
                    AddSums(k, ("gate", gate));
                    break;
                }
                case BackwardStepKind.LayerNorm:
                    _w.Line($"Backward.LayerNormBackward({output}, {gradient}, {View(x)}, {eps});");
                    break;
                case BackwardStepKind.RmsNorm:
                {
                    var scale = op.Weights["scale"]!;
                    string size = op.Attributes["group"].ToInteger("group").ToString();
                    if (op.IsTrainable)
                        _w.Line($"if (WeightGradient({WeightKey(scale)}) is {{ }} {GradientVariable(scale)}) FullBackward.RmsNormScaleBackward({GradientVariable(scale)}, {gradient}, {View(x)}, {size}, {eps});");
                    _w.Line($"Backward.RmsNormBackward({output}, {gradient}, {View(x)}, {Weight(scale)}, {size}, {eps});");
                    break;
                }
                case BackwardStepKind.Rope:
                    _w.Line($"Backward.ApplyRopeBackward({output}, {gradient}, {RopeMatrices(op.Values["pe"])}, {step.HeadDim});");
                    break;
            }
            if (targets[k] == BackwardTarget.Accumulate)
            {
                _w.Line($"_backend.Add({targetViews[k]}, {targetViews[k]}, {output});");
                gradient = targetViews[k]!;
            }
            else gradient = targets[k] == BackwardTarget.Assign ? targetViews[k]! : output + ".AsView()";
        }
        foreach (string temporary in temporaries) _w.Line($"{temporary}.Dispose();");

        void AddSums(int step, params (string Argument, string Output)[] outputs)
        {
            foreach (var (argument, output) in outputs)
            {
                var sum = sums.FirstOrDefault(s => s.Step == step && s.Argument == argument);
                if (sum != null && sum.Accumulates) _w.Line($"_backend.Add({sum.Target}, {sum.Target}, {output});");
            }
        }
    }

    /// <summary>The backward groups' kernels, after the forward's in the FusedKernels class.</summary>
    private void EmitBackwardKernels()
    {
        foreach (var layout in _backwardKernels)
        {
            _w.Line();
            FusedBackwardEmitter.Emit(layout, _w);
        }
    }
}
