using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>How the down matrix A starts; B always starts at zero so the untrained adapter changes nothing.</summary>
public enum LoraInitKind
{
    /// <summary>PEFT's init_lora_weights="gaussian" (the diffusers scripts): A ~ N(0, σ = 1/rank).</summary>
    Gaussian,

    /// <summary>sd-scripts / nn.Linear's default: kaiming_uniform_(a = √5), i.e. A ~ U(−1/√in, 1/√in).</summary>
    KaimingUniform,
}

public static class LoraInit
{
    /// <summary>A schema's "init" ("gaussian", "kaiming_uniform") as a kind.</summary>
    public static LoraInitKind ParseKind(string init) => init switch
    {
        "gaussian" => LoraInitKind.Gaussian,
        "kaiming_uniform" => LoraInitKind.KaimingUniform,
        _ => throw new ArgumentException($"unknown LoRA init '{init}': gaussian or kaiming_uniform", nameof(init)),
    };

    /// <summary>How a preset of the model's schema starts A.</summary>
    public static LoraInitKind KindOf(string preset, ModelDescriptor model) => ParseKind(LoraTargets.FindPreset(preset, model).Init);

    /// <summary>A [rank, in] for one adapter, drawn from <paramref name="random"/>.</summary>
    public static HostTensor Down(LoraInitKind kind, int rank, int inFeatures, TrainingRandom random)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "LoRA rank must be at least 1");
        var down = new HostTensor(rank, inFeatures);
        switch (kind)
        {
            case LoraInitKind.Gaussian:
                random.FillGaussian(down.Data);
                float std = 1f / rank;
                for (int i = 0; i < down.Data.Length; i++) down.Data[i] *= std;
                break;
            case LoraInitKind.KaimingUniform:
                // gain √(2/(1+a²)) = √(1/3) times √(3/fan_in) gives the bound 1/√fan_in.
                double bound = 1.0 / Math.Sqrt(inFeatures);
                for (int i = 0; i < down.Data.Length; i++) down.Data[i] = (float)((2 * random.NextDouble() - 1) * bound);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
        return down;
    }

    /// <summary>
    /// The A and B parameters (and zeroed gradients) of every target, in target order, A drawn from one stream so the
    /// same seed and targets always give the same adapters.
    /// </summary>
    public static List<TrainableParameter> Create(IBackend backend, IEnumerable<LoraTarget> targets, int rank, LoraInitKind kind, TrainingRandom random)
    {
        var parameters = new List<TrainableParameter>();
        foreach (var target in targets)
        {
            var down = Down(kind, rank, target.In, random);
            parameters.Add(new TrainableParameter(target.Module.DownName, backend.Upload(down), TensorTransfer.Zeros(backend, down.Shape)));
            int[] upShape = [target.Rows, rank];
            parameters.Add(new TrainableParameter(target.Module.UpName, TensorTransfer.Zeros(backend, upShape), TensorTransfer.Zeros(backend, upShape)));
        }
        return parameters;
    }

    /// <summary>
    /// A model's training state holding the adapters that <see cref="Create"/> made for <paramref name="targets"/>,
    /// each acting on its target's rows with y += scale·(x·Aᵀ)·Bᵀ.
    /// </summary>
    public static TrainingState Attach(IEnumerable<LoraTarget> targets, IReadOnlyList<TrainableParameter> parameters, float scale)
    {
        var byName = parameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        var state = new TrainingState();
        foreach (var target in targets)
        {
            var down = byName[target.Module.DownName];
            var up = byName[target.Module.UpName];
            state.Add(target.Module.Module, new LoraAdapter(down.Value, up.Value, scale, down.Gradient, up.Gradient, target.RowOffset));
        }
        return state;
    }
}
