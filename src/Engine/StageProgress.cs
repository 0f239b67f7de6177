namespace InFluxEdit;

/// <summary>
/// How far one stage of a long operation has come (loading a model's tensors, encoding prompts, sampling steps): the
/// engine never prints, it reports these to the <see cref="IProgress{T}"/> a caller passes.
/// </summary>
/// <param name="Stage">What is under way, e.g. "loading T5".</param>
/// <param name="Unit">What <paramref name="Done"/> counts, e.g. "tensors" or "steps".</param>
public readonly record struct StageProgress(string Stage, string Unit, int Done, int Total)
{
    /// <summary>The per-item progress the runtime's loaders report, forwarded as this stage (null stays null).</summary>
    public static IProgress<(int Done, int Total)>? Of(IProgress<StageProgress>? progress, string stage, string unit) =>
        progress == null ? null : new Progress(progress, stage, unit);

    private sealed class Progress(IProgress<StageProgress> target, string stage, string unit) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => target.Report(new StageProgress(stage, unit, value.Done, value.Total));
    }
}
