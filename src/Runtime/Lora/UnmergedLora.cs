using System.Globalization;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Lora;

/// <summary>
/// Low-rank LoRA pieces uploaded as they are and applied by the model's forward (y[.., rows] += s·(x·Aᵀ)·Bᵀ on each
/// adapted layer) instead of merged into the weights: what keeps a LoRA exact beside a quantized base, whose merged
/// weight would have to be quantized again (slow for K-quants, and the LoRA's change is rounded away at 4 bits).
/// Several pieces on one layer add up; a piece for a row block of a fused layer (q of a fused qkv) acts on those rows.
/// </summary>
public sealed class UnmergedLora : IDisposable
{
    private readonly List<DeviceTensor> _tensors = [];

    private UnmergedLora() { }

    /// <summary>The adapters, to set as the model's <see cref="CompiledModel.Training"/>.</summary>
    public TrainingState State { get; } = new();

    /// <summary>
    /// Uploads <paramref name="pieces"/> for <paramref name="model"/>. A piece on a layer that no pass of the model applies
    /// adapters on (not one of its <see cref="ModelDescriptor.AdapterModules"/>) is an error: it would silently do nothing.
    /// </summary>
    public static UnmergedLora Upload(IBackend backend, IReadOnlyList<LowRankDelta> pieces, ModelDescriptor model)
    {
        if (backend is not ITrainingBackend)
            throw new NotSupportedException($"the {backend.Name} backend cannot apply LoRA adapters unmerged (no ITrainingBackend products): merge them into the weights instead");
        var adaptable = model.AdapterModules.ToHashSet(StringComparer.Ordinal);
        var shapes = model.Parameters.ToDictionary(p => p.Name, p => p.Shape, StringComparer.Ordinal);
        foreach (var piece in pieces)
        {
            if (!adaptable.Contains(piece.Module))
                throw new ArgumentException(
                    $"a LoRA piece adapts '{piece.Module}', a layer on which {model.Name}'s forward applies no adapters (schemas/{model.SchemaFile} does not list it as trainable): merge it into the weight instead");
            int[] weight = shapes[piece.Module + ".weight"];
            if (piece.Down.Shape[1] != weight[1] || piece.RowOffset < 0 || piece.RowOffset + piece.Rows > weight[0] || piece.Up.Shape[1] != piece.Rank)
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                    $"a LoRA piece for '{piece.Module}' is down {HostTensor.FormatShape(piece.Down.Shape)}, up {HostTensor.FormatShape(piece.Up.Shape)} at row {piece.RowOffset}; the weight is {HostTensor.FormatShape(weight)}"));
        }
        var lora = new UnmergedLora();
        try
        {
            // A rank-0 piece changes nothing and would be an empty product.
            foreach (var piece in pieces.Where(p => p.Rank > 0))
            {
                var down = backend.Upload(piece.Down);
                lora._tensors.Add(down);
                var up = backend.Upload(piece.Up);
                lora._tensors.Add(up);
                lora.State.Add(piece.Module, LoraAdapter.Applied(down, up, piece.Scale, piece.RowOffset));
            }
        }
        catch
        {
            lora.Dispose();
            throw;
        }
        return lora;
    }

    public void Dispose()
    {
        foreach (var tensor in _tensors) tensor.Dispose();
        _tensors.Clear();
    }
}
