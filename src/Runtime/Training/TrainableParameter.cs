using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// A tensor the optimiser updates and the gradient the loss-and-gradients call leaves for it (same shape).
/// Names follow one convention so checkpoints, optimiser state and LoRA export agree: "&lt;module&gt;.lora_A" [rank, in]
/// and "&lt;module&gt;.lora_B" [rows, rank] for adapters (see <see cref="LoraModule"/>), a checkpoint name such as
/// "img_in.weight" for a weight trained in full.
/// </summary>
public sealed record TrainableParameter(string Name, DeviceTensor Value, DeviceTensor Gradient)
{
    public long Length => Value.Length;
}

/// <summary>
/// An adapter's place in the model: a BFL linear module ("double_blocks.0.img_attn.qkv") and, for an adapter on one
/// row block of a fused layer (diffusers' split q/k/v), the block's index among the module's "diffusers" aliases in
/// row order ("double_blocks.0.img_attn.qkv:1" is k). The row block is the schema's, never a hard-coded FLUX size.
/// </summary>
public readonly record struct LoraModule(string Module, int? Part)
{
    public const string DownSuffix = ".lora_A";
    public const string UpSuffix = ".lora_B";

    public string Name => Part is { } part ? $"{Module}:{part}" : Module;

    public string DownName => Name + DownSuffix;
    public string UpName => Name + UpSuffix;

    public static LoraModule Parse(string name)
    {
        int colon = name.LastIndexOf(':');
        if (colon < 0) return new LoraModule(name, null);
        if (!int.TryParse(name.AsSpan(colon + 1), out int part) || part < 0)
            throw new FormatException($"'{name}': the part after ':' must be a row-block index (0, 1, ...)");
        return new LoraModule(name[..colon], part);
    }

    /// <summary>The adapter a parameter name belongs to and whether it is the down (A) half; false for a full weight.</summary>
    public static bool TryParseHalf(string parameterName, out LoraModule module, out bool isDown)
    {
        foreach (var (suffix, down) in new[] { (DownSuffix, true), (UpSuffix, false) })
        {
            if (!parameterName.EndsWith(suffix, StringComparison.Ordinal)) continue;
            module = Parse(parameterName[..^suffix.Length]);
            isDown = down;
            return true;
        }
        module = default;
        isDown = false;
        return false;
    }

    public override string ToString() => Name;
}

/// <summary>Moves whole tensors between host and device for the host-side parts of training (init, checkpoints, Prodigy).</summary>
public static class TensorTransfer
{
    public static HostTensor Download(IBackend backend, DeviceTensor tensor) =>
        backend.Download(View.Of(tensor), (int[])tensor.Shape.Clone());

    /// <summary>Overwrites an existing device tensor, so views and references held elsewhere stay valid.</summary>
    public static void Overwrite(IBackend backend, DeviceTensor destination, HostTensor source)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException(
                $"cannot write {HostTensor.FormatShape(source.Shape)} into {destination}: element counts differ");
        using var staged = backend.Upload(new HostTensor((int[])destination.Shape.Clone(), source.Data));
        backend.Copy(View.Of(destination), View.Of(staged));
    }

    /// <summary>A device tensor of zeros (Allocate leaves contents undefined).</summary>
    public static DeviceTensor Zeros(IBackend backend, int[] shape) => backend.Upload(new HostTensor((int[])shape.Clone()));
}
