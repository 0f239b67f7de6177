using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;

namespace InFluxEdit.Generator.Planning;

/// <summary>
/// A region of the unrolled training pass: one statement outside the repeated blocks, or one block iteration. The
/// backward pass runs regions in reverse, so a value's reads are done once its last reading region's forward has run,
/// and needed again from that region's backward on.
/// </summary>
public sealed class TrainingRegion
{
    public TrainingRegion(BoundStatement statement, RecomputeBlock? block)
    {
        Statement = statement;
        Block = block;
    }

    /// <summary>The statement, or the block's comment.</summary>
    public BoundStatement Statement { get; }

    /// <summary>The block iteration, or null for a statement outside the blocks.</summary>
    public RecomputeBlock? Block { get; }

    public IEnumerable<BoundStatement> Statements => Block?.Statements ?? new[] { Statement };

    /// <summary>The regions of an entry's body in forward order.</summary>
    public static IReadOnlyList<TrainingRegion> Of(BoundEntry entry, RecomputePlan recompute)
    {
        var regions = new List<TrainingRegion>();
        var statements = entry.Body.Statements;
        for (int i = 0; i < statements.Count; i++)
        {
            var block = recompute.Starting(statements[i]);
            regions.Add(new TrainingRegion(statements[i], block));
            if (block != null) i += block.Statements.Count;
        }
        return regions;
    }
}

/// <summary>
/// Which activations a training pass moves to host memory while they wait for the backward (TrainingState's
/// OffloadCheckpoints): a value a block reads last, with more blocks after that one, moves out after that block's
/// forward and comes back at the start of the backward of the region after it, one region ahead of the backward that
/// reads it again. At 12B these are the residual streams between the 57 blocks (3.3 GB at 1024²). Values every block
/// reads (the conditioning vector, the rotary table) would come back at once, and the small vectors of the embedders
/// would cost a copy's latency for a few kilobytes: they stay.
/// </summary>
public sealed class CheckpointOffloadPlan
{
    private readonly Dictionary<TrainingRegion, List<Storage>> _movedAfter = new();
    private readonly Dictionary<TrainingRegion, List<Storage>> _restoredBefore = new();

    /// <summary>What moves to host memory after the region's forward (in the order they are moved).</summary>
    public IReadOnlyList<Storage> MovedAfter(TrainingRegion region) =>
        _movedAfter.TryGetValue(region, out var list) ? list : (IReadOnlyList<Storage>)new Storage[0];

    /// <summary>What comes back to the device before the region's backward.</summary>
    public IReadOnlyList<Storage> RestoredBefore(TrainingRegion region) =>
        _restoredBefore.TryGetValue(region, out var list) ? list : (IReadOnlyList<Storage>)new Storage[0];

    public static CheckpointOffloadPlan Create(BoundEntry entry, BufferPlan plan, IReadOnlyList<TrainingRegion> regions)
    {
        var result = new CheckpointOffloadPlan();
        var outputs = new HashSet<Storage>(entry.Outputs.Select(plan.StorageOf));
        var allocatedIn = new Dictionary<Storage, int>();
        var lastUse = new Dictionary<Storage, int>();
        for (int r = 0; r < regions.Count; r++)
            foreach (var statement in regions[r].Statements)
            {
                foreach (var value in BufferPlan.Reads(statement)) lastUse[plan.StorageOf(value)] = r;
                if (statement is not BoundOp op) continue;
                foreach (var output in op.Outputs) lastUse[plan.StorageOf(output)] = r;
                if (plan.AllocatedBy(op) is { } storage && (regions[r].Block is not { } block || block.IsKept(op)))
                    allocatedIn[storage] = r;
            }
        int lastBlock = regions.Select((region, index) => region.Block != null ? index : -1).Max();
        foreach (var pair in allocatedIn.OrderBy(p => p.Key.Id))
        {
            var storage = pair.Key;
            int last = lastUse[storage];
            if (outputs.Contains(storage) || last <= pair.Value || regions[last].Block == null || last >= lastBlock) continue;
            Add(result._movedAfter, regions[last], storage);
            Add(result._restoredBefore, regions[last + 1], storage);
        }
        return result;
    }

    private static void Add(Dictionary<TrainingRegion, List<Storage>> map, TrainingRegion region, Storage storage)
    {
        if (!map.TryGetValue(region, out var list)) map[region] = list = new List<Storage>();
        list.Add(storage);
    }
}
