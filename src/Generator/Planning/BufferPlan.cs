using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Graph;

namespace InFluxEdit.Generator.Planning;

/// <summary>One block of device memory: allocated by an op, shared by its in-place successors and views.</summary>
public sealed class Storage
{
    public Storage(int id, BoundValue owner, bool isInput)
    {
        Id = id;
        Owner = owner;
        IsInput = isInput;
    }

    public int Id { get; }

    /// <summary>The value that first filled it (its name names the C# variable).</summary>
    public BoundValue Owner { get; }

    /// <summary>Graph inputs belong to the caller and are never written or released.</summary>
    public bool IsInput { get; }
}

/// <summary>
/// Stage 3: memory. Decides which ops write over their input (when the schema writes back to the same name
/// and the memory is ours), and releases every buffer right after its last reader, in the scope that
/// allocated it — so a block's temporaries die inside the block and peak memory stays about one block's worth.
/// </summary>
public sealed class BufferPlan
{
    private readonly Dictionary<BoundValue, Storage> _storage = new();
    private readonly Dictionary<BoundStatement, List<Storage>> _releaseAfter = new();
    private readonly Dictionary<BoundOp, Storage> _allocations = new();
    private readonly Dictionary<Storage, BoundScope> _allocatedIn = new();
    private readonly HashSet<Storage> _outputs = new();
    private readonly List<SchemaDiagnostic> _diagnostics = new();
    private int _nextId;

    public IReadOnlyList<SchemaDiagnostic> Diagnostics => _diagnostics;

    public Storage StorageOf(BoundValue value) => _storage[value];

    /// <summary>The storage an op allocates for its output, or null (views, in-place, taps).</summary>
    public Storage? AllocatedBy(BoundOp op) => _allocations.TryGetValue(op, out var s) ? s : null;

    public IReadOnlyList<Storage> ReleasedAfter(BoundStatement statement) =>
        _releaseAfter.TryGetValue(statement, out var list) ? list : (IReadOnlyList<Storage>)new Storage[0];

    /// <summary>
    /// The plan of an entry. For the training pass (<paramref name="keepActivations"/>) nothing is written in place
    /// and nothing is released: the backward pass reads every activation.
    /// </summary>
    public static BufferPlan Create(BoundEntry entry, bool keepActivations = false)
    {
        var plan = new BufferPlan { _keepActivations = keepActivations };
        foreach (var input in entry.Inputs) plan._storage[input] = new Storage(plan._nextId++, input, isInput: true);
        plan.AssignStorage(entry.Body, insideRepeat: false);
        foreach (var output in entry.Outputs) plan._outputs.Add(plan._storage[output]);
        if (!keepActivations) plan.PlanReleases(entry.Body);
        return plan;
    }

    private bool _keepActivations;

    private void AssignStorage(BoundScope scope, bool insideRepeat)
    {
        foreach (var statement in scope.Statements)
        {
            if (statement is BoundRepeat repeat)
            {
                AssignStorage(repeat.Body, insideRepeat: true);
                continue;
            }
            if (statement is not BoundOp op) continue;
            if (op.Outputs.Count == 0) continue;
            if (op.Definition.OutputsAreViews)
            {
                foreach (var output in op.Outputs) _storage[output] = _storage[output.ViewOf!];
                continue;
            }
            var output0 = op.Outputs[0];
            string? alias = op.Definition.AliasableInput;
            if (!_keepActivations && alias != null && op.Values.TryGetValue(alias, out var input) && input.EmitName == output0.EmitName && !_storage[input].IsInput)
            {
                op.InPlace = true;
                _storage[output0] = _storage[input];
                continue;
            }
            var storage = new Storage(_nextId++, output0, isInput: false);
            _storage[output0] = storage;
            _allocations[op] = storage;
            _allocatedIn[storage] = scope;
            if (insideRepeat && output0.IsCarriedOutOfBlock)
                _diagnostics.Add(new SchemaDiagnostic(DiagnosticIds.InvalidSchema,
                    $"inside a repeat, '{output0.Name}' from outside the block can only be updated in place " +
                    $"(by an op that writes over its input of the same name); give the result a new name",
                    op.Span));
        }
    }

    /// <summary>Every value a statement reads, nested blocks included.</summary>
    public static IEnumerable<BoundValue> Reads(BoundStatement statement) => statement switch
    {
        BoundRepeat repeat => repeat.Body.Statements.SelectMany(Reads),
        BoundOp op => op.Values.Values.Concat(op.ValueLists.Values.SelectMany(v => v)),
        _ => Enumerable.Empty<BoundValue>(),
    };

    private void PlanReleases(BoundScope scope)
    {
        var lastUse = new Dictionary<Storage, BoundStatement>();
        foreach (var statement in scope.Statements)
        {
            foreach (var value in Reads(statement)) lastUse[_storage[value]] = statement;
            if (statement is BoundOp op && _allocations.TryGetValue(op, out var created) && !lastUse.ContainsKey(created))
                lastUse[created] = statement;
            if (statement is BoundRepeat repeat) PlanReleases(repeat.Body);
        }
        // Storage read in a repeat but allocated in an enclosing scope is released there, after the whole loop.
        // Nothing allocated in a repeat outlives it: names carried out of a block are updated in place.
        foreach (var pair in lastUse)
        {
            var storage = pair.Key;
            if (storage.IsInput || _outputs.Contains(storage)) continue;
            if (!_allocatedIn.TryGetValue(storage, out var owner) || owner != scope) continue;
            if (!_releaseAfter.TryGetValue(pair.Value, out var list)) _releaseAfter[pair.Value] = list = new List<Storage>();
            list.Add(storage);
        }
    }
}
