using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Autodiff;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Emit;

/// <summary>
/// The training pass: ForwardBackward runs the forward with every loop unrolled and every activation kept, hands
/// the output to the caller for dLoss/dOut, then walks the ops in reverse applying each op's backward rule.
/// </summary>
public sealed partial class ModelEmitter
{
    private bool _training;
    private GradientPlan _gradients = null!;
    private readonly Dictionary<BoundValue, string> _uniqueNames = new();
    private readonly Dictionary<BoundValue, string> _gradientNames = new();
    private readonly Dictionary<BoundOp, string> _loraDowns = new();
    private readonly List<string> _temporaries = new();
    private int _temporaryCount;

    private void EmitTraining(TrainingPass pass)
    {
        var entry = pass.Entry;
        _plan = pass.Plan;
        _training = true;
        _tensorNames.Clear();
        _gradients = GradientPlan.Create(entry);
        string parameters = string.Join(", ", entry.Inputs.Select(i => "View " + CSharpNames.Camel(i.EmitName)));

        _w.Line();
        string args = string.Join(", ", entry.Inputs.Select(i => $"RequireInput(inputs, {CSharpNames.Literal(i.Name)}, {CSharpNames.Literal(ClassName)})"));
        _w.Line("public override void ForwardBackward(IReadOnlyDictionary<string, DeviceTensor> inputs, Func<DeviceTensor, DeviceTensor> outputGradient) =>");
        _w.Line($"    ForwardBackward({args}, outputGradient);");
        _w.Line();
        _w.Line("/// <summary>");
        _w.Line("/// One training pass: the forward with every activation kept and the adapters of <see cref=\"CompiledModel.Training\"/>");
        _w.Line("/// applied, then <paramref name=\"outputGradient\"/> (given the output, it returns dLoss/dOutput, which this method");
        _w.Line("/// disposes), then the backward pass, which adds into the adapters' and trainable weights' gradients.");
        _w.Line("/// </summary>");
        _w.Open($"public void ForwardBackward({parameters}, Func<DeviceTensor, DeviceTensor> outputGradient)");
        EmitPrologue(entry);
        _w.Line("// Forward, keeping every activation for the backward pass.");
        EmitScope(entry.Body);

        var output = entry.Outputs[0];
        string outputGradientName = DeclareGradientName(output);
        _w.Line();
        _w.Line($"var {outputGradientName} = outputGradient({TensorOf(output)});");
        _gradientNames[output] = outputGradientName;

        _w.Line();
        _w.Line("// Backward: the ops in reverse, each adding its inputs' gradients.");
        foreach (var statement in Enumerable.Reverse(entry.Body.Statements))
        {
            if (statement is BoundComment comment)
            {
                _w.Line($"// (backward) {comment.Text}");
                continue;
            }
            if (statement is not BoundOp op) continue;
            bool outputsHaveGradients = op.Outputs.Any(o => HasGradient(o));
            bool inputsNeedGradients = BufferPlan.Reads(op).Any(_gradients.NeedsGradient);
            if (!outputsHaveGradients || !(inputsNeedGradients || op.IsTrainable) || op.Definition is SplitOp or TapOp) continue;
            _w.Line($"// d {op.Describe()}");
            op.Definition.EmitBackward(op, this);
            foreach (var o in op.Outputs.Where(o => o.ViewOf == null && _gradientNames.ContainsKey(o)))
            {
                _w.Line($"{_gradientNames[o]}.Dispose();");
                _gradientNames.Remove(o);
            }
        }

        _w.Line();
        _w.Line("// Release the activations and what is left of the gradients.");
        foreach (string name in _gradientNames.Values.Distinct()) _w.Line($"{name}.Dispose();");
        foreach (string name in _loraDowns.Values) _w.Line($"{name}?.Dispose();");
        foreach (var storage in _plan.Allocations) _w.Line($"{_tensorNames[storage]}.Dispose();");
        _declared.Pop();
        _w.Close();
        _training = false;
    }

    private void EmitLoraForward(BoundOp op)
    {
        string name = CSharpNames.Camel(op.Outputs[0].EmitName).TrimStart('@') + "Down";
        for (int n = 2; _declared.Peek().Contains(name); n++) name = CSharpNames.Camel(op.Outputs[0].EmitName).TrimStart('@') + "Down" + n;
        _declared.Peek().Add(name);
        _loraDowns[op] = name;
        _w.Line($"var {name} = ApplyLora({View(op.Outputs[0])}, {View(op.Values["x"])}, {ModuleKey(op.Weights["weight"]!)});");
    }

    private string DeclareGradientName(BoundValue value)
    {
        string baseName = "d" + CSharpNames.Pascal(value.EmitName);
        string name = baseName;
        for (int n = 2; _declared.Peek().Contains(name); n++) name = baseName + n;
        _declared.Peek().Add(name);
        return name;
    }

    private bool HasGradient(BoundValue value) => _gradientNames.ContainsKey(value.Root);

    /// <summary>The gradient of a value: its own buffer, or for a split part the slice of its whole's buffer.</summary>
    private string GradientView(BoundValue value)
    {
        if (value.ViewOf == null) return $"{_gradientNames[value]}.AsView()";
        return $"{GradientView(value.ViewOf)}.{SplitOp.SliceOf(_gradients.SplitOf(value), value, this)}";
    }

    private void EnsureRootGradient(BoundValue value)
    {
        var root = value.Root;
        if (_gradientNames.ContainsKey(root)) return;
        string name = DeclareGradientName(root);
        _w.Line($"var {name} = Zeros({string.Join(", ", root.Shape.Select(Dim))});");
        _gradientNames[root] = name;
    }

    // IBackwardEmitter

    public bool NeedsGradient(BoundValue value) => _gradients.NeedsGradient(value);

    public string Gradient(BoundValue output)
    {
        EnsureRootGradient(output);
        return GradientView(output);
    }

    public string Temporary(BoundValue like)
    {
        string name = $"part{++_temporaryCount}";
        _w.Line($"var {name} = Allocate({string.Join(", ", like.Shape.Select(Dim))});");
        return name;
    }

    public void Accumulate(BoundValue input, string temporary)
    {
        if (!NeedsGradient(input))
        {
            _w.Line($"{temporary}.Dispose();");
            return;
        }
        if (input.ViewOf == null && !_gradientNames.ContainsKey(input))
        {
            // The first contribution: the temporary becomes the gradient.
            string name = DeclareGradientName(input);
            _w.Line($"var {name} = {temporary};");
            _gradientNames[input] = name;
            return;
        }
        EnsureRootGradient(input);
        string target = GradientView(input);
        _w.Line($"_backend.Add({target}, {target}, {temporary});");
        _w.Line($"{temporary}.Dispose();");
    }

    public void AccumulateView(BoundValue input, string view)
    {
        if (!NeedsGradient(input)) return;
        if (input.ViewOf == null && !_gradientNames.ContainsKey(input))
        {
            string name = DeclareGradientName(input);
            _w.Line($"var {name} = Allocate({string.Join(", ", input.Shape.Select(Dim))});");
            _w.Line($"_backend.Copy({name}, {view});");
            _gradientNames[input] = name;
            return;
        }
        EnsureRootGradient(input);
        string target = GradientView(input);
        _w.Line($"_backend.Add({target}, {target}, {view});");
    }

    public string LoraDown(BoundOp op) => _loraDowns[op];

    public string ModuleKey(BoundWeight weight) =>
        weight.Block != null ? Interpolated(weight.Module) : CSharpNames.Literal(weight.Module);

    public string WeightKey(BoundWeight weight) => CSharpNames.Literal(weight.Key);
}
