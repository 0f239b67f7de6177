using CommandLine;
using InFluxEdit.Cli.Console;
using InFluxEdit.Training;

namespace InFluxEdit.Cli.Commands;

[Verb("pretrain-toy", HelpText = "Make the project's toy FLUX Fill base from nothing, as a FLUX model folder (--flux-dir reads it): tokenizers, seeded text encoders (kept frozen), an autoencoder trained for reconstruction on procedural scenes, then the toy transformer trained in full as an inpainting model on the same scenes with random masks and their captions, then on squares, 2:1 and 1:2 scenes together. Every stage is seeded; a stage whose file exists is kept, so an interrupted run continues.")]
public sealed class PretrainToyOptions : DeviceOptions
{
    [Option("out", Default = "models/toy", HelpText = "The model folder to write.")]
    public string Output { get; set; } = "models/toy";

    [Option("work", HelpText = "Where the scenes and the runs' checkpoints go (default: OUT/../toy-work).")]
    public string? Work { get; set; }

    [Option("scenes", Default = 2000, HelpText = "Procedural scenes drawn for every stage.")]
    public int Scenes { get; set; } = 2000;

    [Option("size", Default = 64, HelpText = "Scene side in pixels: 64 gives the transformer 4×4 tokens (at 32 it sees 2×2, too few to place a shape).")]
    public int Size { get; set; } = 64;

    [Option("vae-steps", Default = 8000, HelpText = "Autoencoder steps at half the scene size (batch 4, about 9 a second on 2 cores at 32×32); the flat-colour scenes need several thousand (MSE 0.17 after 1,500, 0.0125 after 8,000).")]
    public int VaeSteps { get; set; } = 8000;

    [Option("vae-full-size-steps", Default = 500, HelpText = "Autoencoder steps at the full scene size after those (about 4 a second at 64×64): MSE 0.055 → 0.004 at 64×64 in 500.")]
    public int VaeFullSizeSteps { get; set; } = 500;

    [Option("steps", Default = 200000, HelpText = "Transformer steps, one scene each (about 240 a second on 2 cores at 64×64 with 16 T5 tokens).")]
    public int Steps { get; set; } = 200000;

    [Option("lr", Default = 1e-3, HelpText = "Transformer learning rate (AdamW, cosine after a warm-up).")]
    public double LearningRate { get; set; } = 1e-3;

    [Option("aspect-steps", Default = 40000, HelpText = "Transformer steps after those on squares, 2:1 and 1:2 scenes in turn (each at its own size, the short side --size), so a concat diptych's 2:1 canvas is not new to the base; 0 skips the stage.")]
    public int AspectSteps { get; set; } = 40000;

    [Option("aspect-lr", Default = 3e-4, HelpText = "Learning rate of the mixed-aspect stage (AdamW, cosine after a warm-up).")]
    public double AspectLearningRate { get; set; } = 3e-4;

    [Option("seed", Default = 0L, HelpText = "Seed of every stage.")]
    public long Seed { get; set; }
}

public static class PretrainToyCommand
{
    public static int Run(PretrainToyOptions options) => Run(options, options.CommandOutput);

    public static int Run(PretrainToyOptions options, TextWriter log) => Run(options, CommandOutput.Plain(log));

    private static int Run(PretrainToyOptions options, CommandOutput output)
    {
        var log = output.Log;
        using var backend = options.CreateBackend(log);
        ToyBase.Pretrain(new ToyPretrainRequest
        {
            Output = options.Output, Work = options.Work, Scenes = options.Scenes, Size = options.Size, VaeSteps = options.VaeSteps,
            VaeFullSizeSteps = options.VaeFullSizeSteps, Steps = options.Steps, LearningRate = options.LearningRate,
            AspectSteps = options.AspectSteps, AspectLearningRate = options.AspectLearningRate, Seed = options.Seed,
        }, backend, log, output.Training);
        output.Wrote(options.Output);
        return 0;
    }
}
