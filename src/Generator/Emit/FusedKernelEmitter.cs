using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Emit;

/// <summary>
/// The ILGPU C# of one fusion group: a kernel whose thread group handles one segment of one row. Each normalisation
/// gets its statistics from passes over the segment that recompute the chain up to its input (cheap arithmetic on
/// values that stay in cache), and a last pass computes the whole chain and stores only the values read after the
/// group. Every thread reads and writes only its own columns (a RoPE pair stays with one thread), so the kernel may
/// write over its inputs. The arithmetic is written in the unfused kernels' order, so both round alike.
/// </summary>
internal sealed class FusedKernelEmitter
{
    private readonly FusionGroup _group;
    private readonly CodeWriter _w;
    private readonly IReadOnlyList<FusedInput> _operands;
    private readonly Dictionary<BoundValue, int> _chainIndex = new();

    private FusedKernelEmitter(FusionGroup group, CodeWriter writer)
    {
        _group = group;
        _w = writer;
        _operands = group.Operands;
        _chainIndex[group.Input] = 0;
        for (int i = 0; i < group.Steps.Count; i++) _chainIndex[group.Steps[i].Output] = i + 1;
    }

    public static string KernelName(FusionGroup group) =>
        string.Concat(group.Steps.Select(s => CSharpNames.Pascal(s.Op.Definition.Name))) + group.Number;

    public static void Emit(FusionGroup group, CodeWriter writer) => new FusedKernelEmitter(group, writer).EmitKernel();

    private void EmitKernel()
    {
        var shape = _group.Steps[_group.Steps.Count - 1].Output;
        _w.Line("/// <summary>");
        _w.Line($"/// Group {_group.Number}, over {Escape(shape.ShapeText)} in segments of {_group.Segment} columns" +
                (_group.Lanes > 1 ? $", {_group.Lanes} adjacent columns per thread" : "") + ":");
        foreach (var step in _group.Steps) _w.Line($"///   {Escape(step.Op.Describe())}");
        _w.Line("/// Operands: " + Escape(string.Join(", ", _operands.Select((o, i) => $"A{i} = {Describe(o, i)}"))) + ".");
        _w.Line("/// </summary>");
        _w.Open($"public static void {KernelName(_group)}(FusedLaunch p)");
        _w.Line("var partials = SharedMemory.Allocate<float>(FusedMath.MaxGroupSize);");
        _w.Line("long flatRow = Grid.IdxX / p.SegmentsPerRow;");
        _w.Line("int first = (Grid.IdxX - (int)(flatRow * p.SegmentsPerRow)) * p.Segment;");
        _w.Line(_group.Lanes == 1 ? "int start = Group.IdxX;" : $"int start = Group.IdxX * {_group.Lanes};");
        _w.Line(_group.Lanes == 1 ? "int stride = Group.DimX;" : $"int stride = Group.DimX * {_group.Lanes};");
        for (int k = 1; k <= _group.Steps.Count; k++)
        {
            var step = _group.Steps[k - 1];
            if (step.Kind == FusedStepKind.LayerNorm) EmitLayerNormStatistics(k, step);
            else if (step.Kind == FusedStepKind.RmsNorm) EmitRmsNormStatistics(k, step);
        }
        _w.Line($"// The chain, storing {string.Join(", ", _group.Writes.Select(w => w.Name))}.");
        OpenSegmentLoop();
        EmitChain(_group.Steps.Count);
        foreach (var written in _group.Writes)
            for (int lane = 0; lane < _group.Lanes; lane++)
                _w.Line($"p.A{_operands.ToList().FindIndex(o => o.Argument == "out" && o.Value == written)}.Set(flatRow, {Column(lane)}, {Local(_chainIndex[written], lane)});");
        _w.Close();
        _w.Close();
    }

    private static string Escape(string text) => text.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

    private static string Describe(FusedInput operand, int index)
    {
        string what = operand.Weight != null ? operand.Weight.LocalName : operand.Value!.Name + " " + operand.Value.ShapeText;
        return operand.Argument switch
        {
            "out" => what + " (written)",
            "in" => what,
            _ => what + operand.Addressing switch
            {
                FusedAddressing.OverTokens => " (per sample)",
                FusedAddressing.SegmentWeight => " (per segment column)",
                FusedAddressing.RopeMatrices => " (RoPE matrices)",
                _ => "",
            },
        };
    }

    private void EmitLayerNormStatistics(int k, FusedStep step)
    {
        _w.Line($"// {step.Op.Definition.Name} ({k}): mean and inverse standard deviation of its input over the segment, in two passes.");
        EmitSegmentSum(k, $"sum{k}", lane => new[] { $"sum{k} += {Local(k - 1, lane)};" });
        _w.Line($"float mean{k} = FusedMath.GroupSum(partials, sum{k}) / p.Segment;");
        EmitSegmentSum(k, $"squares{k}", lane => new[]
        {
            $"float d{k}_{lane} = {Local(k - 1, lane)} - mean{k};",
            $"squares{k} += d{k}_{lane} * d{k}_{lane};",
        });
        EmitInverse(k, step);
    }

    private void EmitRmsNormStatistics(int k, FusedStep step)
    {
        _w.Line($"// {step.Op.Definition.Name} ({k}): inverse root mean square of its input over the segment.");
        EmitSegmentSum(k, $"squares{k}", lane => new[] { $"squares{k} += {Local(k - 1, lane)} * {Local(k - 1, lane)};" });
        EmitInverse(k, step);
    }

    /// <summary>A pass over the segment that recomputes the chain up to step k's input and adds each thread's terms.</summary>
    private void EmitSegmentSum(int k, string accumulator, System.Func<int, IEnumerable<string>> terms)
    {
        _w.Line($"float {accumulator} = 0f;");
        OpenSegmentLoop();
        EmitChain(k - 1);
        for (int lane = 0; lane < _group.Lanes; lane++)
            foreach (string line in terms(lane)) _w.Line(line);
        _w.Close();
    }

    private void EmitInverse(int k, FusedStep step) =>
        _w.Line($"float inverse{k} = 1f / FusedMath.Sqrt(FusedMath.GroupSum(partials, squares{k}) / p.Segment + {Eps(step)});");

    private static string Eps(FusedStep step) => CSharpNames.Float(step.Op.Attributes["eps"].Number!.Value);

    private void OpenSegmentLoop()
    {
        _w.Open("for (int c = start; c < p.Segment; c += stride)");
        _w.Line("int col = first + c;");
    }

    private string Column(int lane) => lane == 0 ? "col" : $"col + {lane}";

    private static string Local(int index, int lane) => $"v{index}_{lane}";

    /// <summary>The chain's values 0..upTo at this thread's columns, as locals.</summary>
    private void EmitChain(int upTo)
    {
        for (int lane = 0; lane < _group.Lanes; lane++)
            _w.Line($"float {Local(0, lane)} = p.A{_operands.ToList().FindIndex(o => o.Argument == "in")}.At(flatRow, {Column(lane)});");
        for (int k = 1; k <= upTo; k++) EmitStep(k, _group.Steps[k - 1]);
    }

    private void EmitStep(int k, FusedStep step)
    {
        int from = _chainIndex[step.ChainInput];
        if (step.Kind == FusedStepKind.Rope)
        {
            var pe = step.Inputs.Single(i => i.Addressing == FusedAddressing.RopeMatrices);
            string matrices = $"p.A{OperandIndex(pe)}";
            _w.Line($"int pair{k} = col % {step.HeadDim} / 2;");
            string M(int j) => $"{matrices}.At(flatRow, 4 * pair{k} + {j})";
            _w.Line($"float {Local(k, 0)} = {M(0)} * {Local(from, 0)} + {M(1)} * {Local(from, 1)};");
            _w.Line($"float {Local(k, 1)} = {M(2)} * {Local(from, 0)} + {M(3)} * {Local(from, 1)};");
            return;
        }
        for (int lane = 0; lane < _group.Lanes; lane++)
        {
            string v = Local(from, lane);
            string Read(string argument) => ReadInput(step.Inputs.Single(i => i.Argument == argument), lane);
            string expression = step.Kind switch
            {
                FusedStepKind.LayerNorm => $"({v} - mean{k}) * inverse{k}",
                FusedStepKind.RmsNorm => $"{v} * inverse{k} * {Read("scale")}",
                _ => step.Op.Definition switch
                {
                    ModulateOp => $"(1f + {Read("scale")}) * {v} + {Read("shift")}",
                    GatedResidualOp => $"{v} + {Read("gate")} * {Read("x")}",
                    AddOp => $"{v} + {Read("b")}",
                    _ => throw new System.InvalidOperationException($"op '{step.Op.Definition.Name}' has no fused form"),
                },
            };
            _w.Line($"float {Local(k, lane)} = {expression};");
        }
    }

    private string ReadInput(FusedInput input, int lane)
    {
        if (input.Value != null && _chainIndex.TryGetValue(input.Value, out int index)) return Local(index, lane);
        string operand = $"p.A{OperandIndex(input)}";
        return input.Addressing == FusedAddressing.SegmentWeight
            ? $"{operand}.At(0, {(lane == 0 ? "c" : $"c + {lane}")})"
            : $"{operand}.At(flatRow, {Column(lane)})";
    }

    private int OperandIndex(FusedInput input)
    {
        for (int i = 0; i < _operands.Count; i++)
            if (_operands[i].Argument != "out" && _operands[i].Value == input.Value && _operands[i].Weight == input.Weight) return i;
        throw new System.InvalidOperationException($"no operand for {input.Argument}");
    }
}
