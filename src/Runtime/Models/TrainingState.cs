using InFluxEdit.Runtime.Backends;

namespace InFluxEdit.Runtime.Models;

/// <summary>
/// A low-rank adapter on one linear layer: y += Scale·(x·Aᵀ)·Bᵀ with A [rank, in] and B [rows, rank] (rows = the
/// layer's outputs), and the gradients the backward pass accumulates into.
/// </summary>
public sealed class LoraAdapter(DeviceTensor a, DeviceTensor b, float scale, DeviceTensor gradA, DeviceTensor gradB)
{
    public DeviceTensor A { get; } = a;
    public DeviceTensor B { get; } = b;
    public float Scale { get; } = scale;
    public DeviceTensor GradA { get; } = gradA;
    public DeviceTensor GradB { get; } = gradB;
    public int Rank => A.Shape[0];
}

/// <summary>
/// What a compiled model trains: adapters by module key ("double_blocks.0.img_attn.qkv") and full weights by
/// checkpoint key ("img_in.weight") with their gradient tensors. The generated ForwardBackward reads it.
/// </summary>
public sealed class TrainingState
{
    public Dictionary<string, LoraAdapter> Adapters { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, DeviceTensor> WeightGradients { get; } = new(StringComparer.Ordinal);
}
