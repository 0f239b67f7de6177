using CommandLine;
using InFluxEdit.Runtime.Training;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("train-vae", HelpText = "Train an autoencoder for reconstruction, every weight in full (mean squared error of decode(encode(x)) on a folder of images): from --weights or from a fresh PyTorch-style initialisation. Checkpoints every N steps (atomically, with the optimiser state for --resume); the trained weights under the checkpoint's own keys and dtype at the end.")]
public sealed class TrainVaeOptions : DeviceOptions
{
    [Option("model", Default = "flux-vae-tiny", HelpText = "A compiled autoencoder with trainable encode and decode entries (flux-vae-tiny, flux-vae).")]
    public string Model { get; set; } = "flux-vae-tiny";

    [Option("weights", HelpText = "Start from this checkpoint; without it the model starts from a seeded initialisation (--seed).")]
    public string? Weights { get; set; }

    [Option("images", Required = true, HelpText = "A folder of .png / .jpg / .jpeg / .webp images (centre-cropped to a square, resized to --size).")]
    public string Images { get; set; } = "";

    [Option("output", Required = true, HelpText = "The output folder: checkpoint.safetensors and MODEL.safetensors (the trained weights).")]
    public string Output { get; set; } = "";

    [Option("size", Default = 32, HelpText = "Training images are size×size pixels (a multiple of the model's downscale, 8 for the FLUX VAE).")]
    public int Size { get; set; } = 32;

    [Option("batch", Default = 4, HelpText = "Images per step.")]
    public int Batch { get; set; } = 4;

    [Option("steps", Default = 500, HelpText = "Optimizer steps.")]
    public int Steps { get; set; } = 500;

    [Option("lr", Default = 1e-3, HelpText = "AdamW learning rate.")]
    public double LearningRate { get; set; } = 1e-3;

    [Option("max-grad-norm", Default = 1.0, HelpText = "Clip the global gradient norm to this (0: no clipping).")]
    public double MaxGradNorm { get; set; } = 1.0;

    [Option("seed", Default = 0L, HelpText = "Seed of the initialisation and of the data order.")]
    public long Seed { get; set; }

    [Option("checkpoint-every", Default = 100, HelpText = "Write the checkpoint every N steps (0: only at the end).")]
    public int CheckpointEvery { get; set; } = 100;

    [Option("log-every", Default = 10, HelpText = "Print the loss every N steps.")]
    public int LogEvery { get; set; } = 10;

    [Option("resume", HelpText = "A checkpoint.safetensors of an earlier run of this command: continues from its step with its weights and optimiser state.")]
    public string? Resume { get; set; }
}

public static class TrainVaeCommand
{
    public static int Run(TrainVaeOptions options)
    {
        var output = options.CommandOutput;
        using var backend = options.CreateBackend(output.Log);
        // As train: the first Ctrl-C or SIGTERM finishes the step and saves a checkpoint to resume from.
        using var stop = StopSignal.FromProcessSignals(note => output.Log.WriteLine(note));
        try
        {
            output.Wrote(AutoencoderTraining.Train(Request(options), backend, output.Log, stop.Token));
            output.Wrote(Path.Combine(options.Output, "checkpoint.safetensors"));
            return 0;
        }
        catch (TrainingStoppedException stopped)
        {
            return TrainReport.Stopped(output, stop, stopped);
        }
    }

    /// <summary>The options as the engine's request.</summary>
    public static AutoencoderTrainRequest Request(TrainVaeOptions options) => new()
    {
        Model = options.Model, Weights = options.Weights, Images = options.Images, Output = options.Output, Size = options.Size,
        Batch = options.Batch, Steps = options.Steps, LearningRate = options.LearningRate, MaxGradNorm = options.MaxGradNorm, Seed = options.Seed,
        CheckpointEvery = options.CheckpointEvery, LogEvery = options.LogEvery, Resume = options.Resume,
    };
}
