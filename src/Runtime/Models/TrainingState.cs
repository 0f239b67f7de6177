using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// A low-rank adapter on a linear layer's output rows [RowOffset, RowOffset + Rows): y[.., rows] += Scale·(x·Aᵀ)·Bᵀ
/// with A [rank, in] and B [Rows, rank], and the gradients the backward pass accumulates into. A fused layer may
/// carry one adapter per row block (diffusers' q, k, v of a fused qkv) or one for all its rows. An adapter only applied
/// (a LoRA kept unmerged beside a quantized base) has no gradients.
/// </summary>
public sealed class LoraAdapter(DeviceTensor a, DeviceTensor b, float scale, DeviceTensor? gradA, DeviceTensor? gradB, int rowOffset = 0)
{
    /// <summary>An adapter that only acts in the forward pass: asking for its gradients is an error.</summary>
    public static LoraAdapter Applied(DeviceTensor a, DeviceTensor b, float scale, int rowOffset) => new(a, b, scale, null, null, rowOffset);

    public int RowOffset { get; } = rowOffset;
    public int Rows => B.Shape[0];
    public DeviceTensor A { get; } = a;
    public DeviceTensor B { get; } = b;
    public float Scale { get; } = scale;
    public DeviceTensor GradA => gradA ?? throw NotTrained();
    public DeviceTensor GradB => gradB ?? throw NotTrained();
    public int Rank => A.Shape[0];

    /// <summary>False for an adapter only applied (<see cref="Applied"/>): it has no gradients.</summary>
    public bool Trained => gradA != null;

    private static InvalidOperationException NotTrained() =>
        new("this LoRA adapter is applied only (kept unmerged for inference) and has no gradients: a training pass needs adapters made by LoraInit");
}

/// <summary>
/// What a compiled model trains: adapters by module key ("double_blocks.0.img_attn.qkv") and full weights by
/// checkpoint key ("img_in.weight") with their gradient tensors. The generated ForwardBackward reads it.
/// </summary>
public sealed class TrainingState
{
    /// <summary>The adapters of each module, by module key.</summary>
    public Dictionary<string, List<LoraAdapter>> Adapters { get; } = new(StringComparer.Ordinal);

    public void Add(string module, LoraAdapter adapter)
    {
        if (!Adapters.TryGetValue(module, out var list)) Adapters[module] = list = new List<LoraAdapter>();
        list.Add(adapter);
    }
    public Dictionary<string, DeviceTensor> WeightGradients { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Per-block recomputation (gradient checkpointing): the forward keeps only the values that cross a repeated
    /// block's boundary and frees the rest as each block ends; the backward runs each block's forward again (adapters
    /// included) right before that block's backward. The same ops run in the same order, so the gradients are the
    /// same; it costs about one more forward and saves all but one block's activations.
    /// </summary>
    public bool Recompute { get; set; }

    /// <summary>
    /// With <see cref="Recompute"/>: each value that crosses a block boundary moves to host memory once the blocks that
    /// read it have run, and comes back one block before the backward that reads it (<see cref="Backends.ITrainingBackend.MoveToHost"/>).
    /// The device then holds the boundaries of about two blocks instead of all of them (3.3 GB of 57 at 12B 1024²), for
    /// two copies of each per step; the gradients are the same.
    /// </summary>
    public bool OffloadCheckpoints { get; set; }
}

/// <summary>What the forward keeps of a layer's adapters for the backward pass: x·Aᵀ of each.</summary>
public sealed class LoraActivations : IDisposable
{
    public List<DeviceTensor> Downs { get; } = new();

    public void Dispose()
    {
        foreach (var down in Downs) down.Dispose();
    }
}
