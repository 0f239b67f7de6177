using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Autodiff;
using InFluxEdit.Generator.Graph;
using InFluxEdit.Generator.Graph.Ops;
using InFluxEdit.Generator.Planning;

namespace InFluxEdit.Generator.Emit;

/// <summary>
/// The training pass: ForwardBackward runs the forward with every loop unrolled and every activation kept, hands
/// the output to the caller for dLoss/dOut, then walks the ops in reverse applying each op's backward rule. Each
/// iteration of a repeated block is a local function, so that with recomputation (gradient checkpointing) the same
/// code runs the block again before its backward instead of keeping its activations.
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

    private static string TrainingMethod(BoundEntry entry) => entry.Name == "forward" ? "ForwardBackward" : MethodName(entry) + "ForwardBackward";

    /// <summary>CompiledModel.ForwardBackward by entry name, onto each entry's typed training method.</summary>
    private void EmitTrainingDispatch()
    {
        _w.Line();
        _w.Open("public override void ForwardBackward(string entry, IReadOnlyDictionary<string, DeviceTensor> inputs, Func<DeviceTensor, DeviceTensor> outputGradient, IDictionary<string, DeviceTensor>? inputGradients = null)");
        _w.Open("switch (entry)");
        foreach (var pass in _trainingPasses)
        {
            var entry = pass.Entry;
            string args = string.Join(", ", entry.Inputs.Select(i => $"RequireInput(inputs, {CSharpNames.Literal(i.Name)}, {CSharpNames.Literal(ClassName)})"));
            _w.Open($"case {CSharpNames.Literal(entry.Name)}:");
            _w.Line($"{TrainingMethod(entry)}({args}, outputGradient{(entry.InputGradients.Count > 0 ? ", inputGradients" : "")});");
            _w.Line("return;");
            _w.Close();
        }
        _w.Line("default:");
        _w.Line($"    throw new ArgumentException($\"{ClassName} has no training pass for entry '{{entry}}' (it has {string.Join(", ", _trainingPasses.Select(p => p.Entry.Name))})\");");
        _w.Close();
        _w.Close();
    }

    private void EmitTraining(TrainingPass pass)
    {
        var entry = pass.Entry;
        _plan = pass.Plan;
        _training = true;
        _tensorNames.Clear();
        _uniqueNames.Clear();
        _gradientNames.Clear();
        _loraDowns.Clear();
        _releasedDowns.Clear();
        _weightGradientNames.Clear();
        _temporaryCount = 0;
        _gradients = GradientPlan.Create(entry);
        _backwardFusion = BackwardPlans[entry];
        _recompute = RecomputePlan.Create(entry, _plan);
        string parameters = string.Join(", ", entry.Inputs.Select(i => "View " + CSharpNames.Camel(i.EmitName)));
        bool handsBackInputs = entry.InputGradients.Count > 0;

        _w.Line();
        _w.Line("/// <summary>");
        _w.Line($"/// One training pass of {entry.Name}: the forward with the adapters of <see cref=\"CompiledModel.Training\"/> applied, then");
        _w.Line("/// <paramref name=\"outputGradient\"/> (given the output, it returns dLoss/dOutput, which this method disposes), then the");
        _w.Line("/// backward pass, which adds into the adapters' and trainable weights' gradients. Each repeated block's forward is a");
        _w.Line("/// local function; with <see cref=\"TrainingState.Recompute\"/> the forward frees a block's inner activations as soon");
        _w.Line("/// as the block is done and the backward runs the block's forward again right before the block's backward.");
        if (handsBackInputs)
            _w.Line($"/// The gradients of {Escape(string.Join(", ", entry.InputGradients.Select(i => i.Name)))} go into <paramref name=\"inputGradients\"/> (owned by the caller) when it is given.");
        _w.Line("/// </summary>");
        _w.Open($"public void {TrainingMethod(entry)}({parameters}, Func<DeviceTensor, DeviceTensor> outputGradient{(handsBackInputs ? ", IDictionary<string, DeviceTensor>? inputGradients = null" : "")})");
        EmitPrologue(entry);
        _declared.Peek().Add("recompute");
        _declared.Peek().Add("again");
        _w.Line("bool recompute = Training?.Recompute == true;");
        var regions = TrainingRegion.Of(entry, _recompute);
        var offload = CheckpointOffloadPlan.Create(entry, _plan, regions);
        bool offloads = regions.Any(r => offload.MovedAfter(r).Count > 0);
        if (offloads)
        {
            _declared.Peek().Add("offloadCheckpoints");
            _w.Line("bool offloadCheckpoints = Training?.OffloadCheckpoints == true;");
        }
        _w.Line();
        _w.Line("// Forward, keeping every activation for the backward pass (recomputing: only the values that cross a block boundary).");
        foreach (var region in regions)
        {
            if (region.Block == null) EmitStatement(region.Statement);
            else EmitBlockForward(region.Block);
            MoveCheckpoints("MoveToHost", offload.MovedAfter(region));
        }

        var output = entry.Outputs[0];
        string outputGradientName = DeclareGradientName(output);
        _w.Line();
        _w.Line($"var {outputGradientName} = outputGradient({TensorOf(output)});");
        _gradientNames[output] = outputGradientName;

        _w.Line();
        _w.Line("// Backward: the ops in reverse, each adding its inputs' gradients.");
        foreach (var region in Enumerable.Reverse(regions))
        {
            MoveCheckpoints("MoveToDevice", offload.RestoredBefore(region));
            if (region.Block is not { } block)
            {
                EmitBackward(region.Statement);
                FreeAfterBackward([region.Statement]);
                continue;
            }
            string name = BlockFunction(block);
            _w.Line();
            _w.Line($"// Backward of {block.Marker.Text}.");
            _w.Line($"if (recompute) Forward{name}(again: true);");
            foreach (var inner in Enumerable.Reverse(block.Statements)) EmitBackward(inner);
            _w.Line($"Release{name}();");
            FreeAfterBackward(block.Statements.Where(s => s is BoundOp op && block.IsKept(op)));
        }

        if (handsBackInputs)
        {
            _w.Line();
            _w.Line("// The inputs' gradients the caller asked for.");
            foreach (var input in entry.InputGradients)
            {
                EnsureRootGradient(input);
                string name = _gradientNames[input];
                _w.Line($"if (inputGradients != null) inputGradients[{CSharpNames.Literal(input.Name)}] = {name};");
                _w.Line($"else {name}.Dispose();");
                _gradientNames.Remove(input);
            }
        }

        _w.Line();
        _w.Line("// Release what is left of the gradients and the adapters' activations outside the blocks.");
        foreach (string name in _gradientNames.Values.Distinct()) _w.Line($"{name}.Dispose();");
        foreach (var pair in _loraDowns.Where(p => !_releasedDowns.Contains(p.Key))) _w.Line($"{pair.Value}?.Dispose();");
        _declared.Pop();
        _w.Close();
        _training = false;
        _backwardFusion = null;
    }

    /// <summary>
    /// Frees the storage <paramref name="statements"/> allocated (outside the blocks' inner storage, which their Release
    /// functions free), right after their backward: only ops that ran after them in the forward read it, and their
    /// backward has run. So the values that cross block boundaries go one block at a time, as the backward passes them,
    /// instead of all at the end, and the pools hand their buffers to the backward of the blocks before.
    /// </summary>
    private void FreeAfterBackward(IEnumerable<BoundStatement> statements)
    {
        foreach (var op in statements.OfType<BoundOp>())
            if (_plan.AllocatedBy(op) is { } storage)
                _w.Line($"{_tensorNames[storage]}.Dispose();");
    }

    /// <summary>With TrainingState.OffloadCheckpoints, the training backend's move of each storage (see <see cref="CheckpointOffloadPlan"/>).</summary>
    private void MoveCheckpoints(string move, IReadOnlyList<Storage> storage)
    {
        if (storage.Count == 0) return;
        _w.Open("if (offloadCheckpoints)");
        foreach (var s in storage) _w.Line($"Backward.{move}({_tensorNames[s]});");
        _w.Close();
    }

    private RecomputePlan _recompute = null!;
    private readonly HashSet<BoundOp> _releasedDowns = new();
    private List<(string Type, string Name, string? Initial)>? _hoisted;

    private static string BlockFunction(RecomputeBlock block) => CSharpNames.Pascal(block.Marker.Text);

    /// <summary>
    /// A block of the training pass: its forward as a local function over variables declared before it (the backward
    /// reads them), run once here and, when recomputing, again before the block's backward; a second local function
    /// frees what the block allocated that nothing after it reads.
    /// </summary>
    private void EmitBlockForward(RecomputeBlock block)
    {
        string name = BlockFunction(block);
        _w.Line();
        _w.Line($"// {block.Marker.Text}");
        var outer = _w;
        var body = new CodeWriter(outer.Depth + 1);
        _w = body;
        _hoisted = new List<(string Type, string Name, string? Initial)>();
        foreach (var statement in block.Statements)
        {
            if (statement is BoundOp op && block.IsKept(op))
            {
                _w.Open("if (!again) // read after the block: kept, so recomputing skips it");
                _insideKept = true;
                EmitStatement(statement);
                _insideKept = false;
                _w.Close();
                continue;
            }
            EmitStatement(statement);
        }
        var hoisted = _hoisted;
        _hoisted = null;
        _w = outer;

        // Several names a line: the 12B model has 57 blocks of about 60 values each. A variable the first call of the
        // local function assigns is definitely assigned after it; only the kept ops' (assigned once, under a condition)
        // need a value here.
        foreach (var group in hoisted.GroupBy(h => h.Type))
            WrappedLines(group.Key + " ", group.Select(h => h.Initial == null ? h.Name : $"{h.Name} = {h.Initial}"), ";");
        _w.Open($"void Forward{name}(bool again)");
        _w.Append(body);
        _w.Close();
        var downs = block.Statements.OfType<BoundOp>().Where(o => !block.IsKept(o) && _loraDowns.ContainsKey(o)).ToList();
        _releasedDowns.UnionWith(downs);
        _w.Open($"void Release{name}()");
        WrappedLines("Free(", block.Internal.Select(s => _tensorNames[s]).Concat(downs.Select(o => _loraDowns[o])), ");");
        _w.Close();
        _w.Line($"Forward{name}(again: false);");
        _w.Line($"if (recompute) Release{name}();");
    }

    private bool _insideKept;

    /// <summary>A declaration, or inside a block's local function an assignment to a variable declared before it.</summary>
    private string Declare(string keyword, string type, string name, string initial)
    {
        if (_hoisted == null) return keyword + " " + name;
        _hoisted.Add((type, name, _insideKept ? initial : null));
        return name;
    }

    /// <summary>"start a, b, c, end" over as many lines as it takes, a dozen items a line.</summary>
    private void WrappedLines(string start, IEnumerable<string> items, string end)
    {
        var list = items.ToList();
        const int PerLine = 12;
        for (int i = 0; i < list.Count; i += PerLine)
        {
            bool last = i + PerLine >= list.Count;
            string line = string.Join(", ", list.Skip(i).Take(PerLine)) + (last ? end : ",");
            _w.Line(i == 0 ? start + line : "    " + line);
        }
    }

    /// <summary>One statement's backward rule (nothing for ops no gradient passes through).</summary>
    private void EmitBackward(BoundStatement statement)
    {
        if (statement is BoundComment comment)
        {
            _w.Line($"// (backward) {comment.Text}");
            return;
        }
        if (statement is not BoundOp op) return;
        if (EmitFusedBackward(op)) return;
        bool outputsHaveGradients = op.Outputs.Any(o => HasGradient(o));
        bool inputsNeedGradients = BufferPlan.Reads(op).Any(_gradients.NeedsGradient);
        if (!outputsHaveGradients || !(inputsNeedGradients || op.IsTrainable) || op.Definition is SplitOp or TapOp) return;
        _w.Line($"// d {op.Describe()}");
        op.Definition.EmitBackward(op, this);
        foreach (var o in op.Outputs.Where(o => o.ViewOf == null && _gradientNames.ContainsKey(o)))
        {
            _w.Line($"{_gradientNames[o]}.Dispose();");
            _gradientNames.Remove(o);
        }
    }

    private void EmitLoraForward(BoundOp op)
    {
        string name = CSharpNames.Camel(op.Outputs[0].EmitName).TrimStart('@') + "Down";
        for (int n = 2; _declared.Peek().Contains(name); n++) name = CSharpNames.Camel(op.Outputs[0].EmitName).TrimStart('@') + "Down" + n;
        _declared.Peek().Add(name);
        _loraDowns[op] = name;
        _w.Line($"{Declare("var", "LoraActivations?", name, "null")} = ApplyLora({View(op.Outputs[0])}, {View(op.Values["x"])}, {ModuleKey(op.Weights["weight"]!)});");
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

    public void PassGradient(BoundValue input, BoundValue output)
    {
        if (!NeedsGradient(input)) return;
        if (input.ViewOf == null && output.ViewOf == null && !_gradientNames.ContainsKey(input)
            && _gradientNames.TryGetValue(output, out string? buffer))
        {
            // The output's gradient dies with this op: it becomes the input's, no copy.
            _gradientNames[input] = buffer;
            _gradientNames.Remove(output);
            return;
        }
        AccumulateView(input, Gradient(output));
    }

    public string LoraDown(BoundOp op) => _loraDowns[op];

    public string ModuleKey(BoundWeight weight) =>
        weight.Block != null ? Interpolated(weight.Module) : CSharpNames.Literal(weight.Module);

    public string WeightKey(BoundWeight weight) => CSharpNames.Literal(weight.Key);

    private readonly Dictionary<BoundWeight, string> _weightGradientNames = new();

    public string GradientVariable(BoundWeight weight)
    {
        if (_weightGradientNames.TryGetValue(weight, out var known)) return known;
        string baseName = "d" + CSharpNames.Pascal(weight.Key);
        string name = baseName;
        for (int n = 2; _declared.Peek().Contains(name); n++) name = baseName + n;
        _declared.Peek().Add(name);
        return _weightGradientNames[weight] = name;
    }
}
