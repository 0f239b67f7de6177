using System.Collections.Generic;
using System.Linq;
using InFluxEdit.Generator.Graph;

namespace InFluxEdit.Generator.Planning;

/// <summary>
/// One iteration of a repeated block in the unrolled training pass ("double_blocks.3"): statements
/// [Start, Start + Length) of the entry's body, the ops whose outputs outlive it, and the storage that dies with it.
/// </summary>
public sealed class RecomputeBlock
{
    public RecomputeBlock(BoundComment marker, int start, IReadOnlyList<BoundStatement> statements,
        IReadOnlyCollection<BoundOp> kept, IReadOnlyList<Storage> internalStorage)
    {
        Marker = marker;
        Start = start;
        Statements = statements;
        _kept = new HashSet<BoundOp>(kept);
        Internal = internalStorage;
    }

    private readonly HashSet<BoundOp> _kept;

    /// <summary>The iteration's comment ("double_blocks.3"), which names it.</summary>
    public BoundComment Marker { get; }

    public int Start { get; }
    public IReadOnlyList<BoundStatement> Statements { get; }

    /// <summary>
    /// Whether an op's output lives past the block (the next block reads it): it is kept through the backward pass,
    /// so recomputing the block skips the op.
    /// </summary>
    public bool IsKept(BoundOp op) => _kept.Contains(op);

    /// <summary>The storage allocated inside the block and read by nothing after it: freed when recomputing.</summary>
    public IReadOnlyList<Storage> Internal { get; }
}

/// <summary>
/// Per-block recomputation (gradient checkpointing) of a training pass. The values live across a block boundary are
/// the block's inputs (made before it) and outputs (read after it); everything else the block allocates may be freed
/// after the block's forward and made again, by the same ops in the same order, right before the block's backward.
/// Blocks are the outermost iterations of the graph's repeats; what lies between them (embedders, the final layer)
/// is always kept.
/// </summary>
public sealed class RecomputePlan
{
    private readonly Dictionary<BoundStatement, RecomputeBlock> _byMarker = new();

    public IReadOnlyList<RecomputeBlock> Blocks { get; }

    private RecomputePlan(IReadOnlyList<RecomputeBlock> blocks)
    {
        Blocks = blocks;
        foreach (var block in blocks) _byMarker[block.Marker] = block;
    }

    /// <summary>The block a statement (an iteration's comment) starts, or null.</summary>
    public RecomputeBlock? Starting(BoundStatement statement) => _byMarker.TryGetValue(statement, out var b) ? b : null;

    public static RecomputePlan Create(BoundEntry entry, BufferPlan plan)
    {
        var statements = entry.Body.Statements;
        var outputs = new HashSet<Storage>(entry.Outputs.Select(plan.StorageOf));
        var blocks = new List<RecomputeBlock>();
        for (int i = 0; i < statements.Count; i++)
        {
            if (statements[i] is not BoundComment { BlockLength: > 0 } marker) continue;
            int start = i + 1, end = start + marker.BlockLength;
            var readAfter = new HashSet<Storage>(outputs);
            for (int j = end; j < statements.Count; j++)
                foreach (var value in BufferPlan.Reads(statements[j])) readAfter.Add(plan.StorageOf(value));
            var body = statements.Skip(start).Take(marker.BlockLength).ToList();
            var kept = new List<BoundOp>();
            var internalStorage = new List<Storage>();
            foreach (var op in body.OfType<BoundOp>())
            {
                if (plan.AllocatedBy(op) is not { } storage) continue;
                if (readAfter.Contains(storage)) kept.Add(op);
                else internalStorage.Add(storage);
            }
            blocks.Add(new RecomputeBlock(marker, start, body, kept, internalStorage));
            i = end - 1;
        }
        return new RecomputePlan(blocks);
    }
}
