using System.Diagnostics;
using System.Globalization;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// The progress line of a run: step, loss and its smoothed value, steps per second, time left and memory in use.
/// The clock is injectable so the arithmetic can be tested without waiting.
/// </summary>
public sealed class TrainingProgress
{
    private readonly Func<TimeSpan> _clock;
    private readonly double _smoothing;
    private readonly int _firstStep;
    private readonly TimeSpan _start;
    private double _ema;
    private int _emaCount;

    /// <param name="totalSteps">The step the run ends at.</param>
    /// <param name="firstStep">Steps already done when this run started (after --resume), so it/s counts this run only.</param>
    /// <param name="smoothing">EMA factor; the smoothed loss is debiased like Adam's moments so early values are not pulled to 0.</param>
    /// <param name="examplesPerStep">Examples one step trains on, over every rank: with more than one, the line shows examples per second too.</param>
    /// <param name="ranks">Processes sharing each step (data-parallel training): the line says over how many.</param>
    public TrainingProgress(int totalSteps, int firstStep = 0, double smoothing = 0.98, Func<TimeSpan>? clock = null, int examplesPerStep = 1, int ranks = 1)
    {
        ExamplesPerStep = examplesPerStep;
        Ranks = ranks;
        if (smoothing is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "the EMA factor lies in [0, 1)");
        TotalSteps = totalSteps;
        _firstStep = firstStep;
        _smoothing = smoothing;
        var stopwatch = Stopwatch.StartNew();
        _clock = clock ?? (() => stopwatch.Elapsed);
        _start = _clock();
    }

    public int TotalSteps { get; }
    public int ExamplesPerStep { get; }
    public int Ranks { get; }
    public int Step { get; private set; }
    public double LastLoss { get; private set; } = double.NaN;

    /// <summary>Debiased exponential moving average of the finite losses seen.</summary>
    public double SmoothedLoss => _emaCount == 0 ? double.NaN : _ema / (1 - Math.Pow(_smoothing, _emaCount));

    public double StepsPerSecond
    {
        get
        {
            double seconds = (_clock() - _start).TotalSeconds;
            return seconds > 0 ? (Step - _firstStep) / seconds : 0;
        }
    }

    public TimeSpan? Remaining => StepsPerSecond > 0 ? TimeSpan.FromSeconds((TotalSteps - Step) / StepsPerSecond) : null;

    /// <summary>Records a finished step; a non-finite loss (a skipped step) does not enter the average.</summary>
    public void Report(int step, double loss)
    {
        Step = step;
        LastLoss = loss;
        if (!double.IsFinite(loss)) return;
        _ema = _smoothing * _ema + (1 - _smoothing) * loss;
        _emaCount++;
    }

    public string FormatLine() => FormatLine(GC.GetTotalMemory(false), Environment.WorkingSet);

    public string FormatLine(long managedBytes, long processBytes)
    {
        var c = CultureInfo.InvariantCulture;
        string eta = Remaining is { } left ? FormatDuration(left) : "?";
        string throughput = ExamplesPerStep == 1 && Ranks == 1 ? ""
            : string.Format(c, " ({0:0.00} examples/s{1})", StepsPerSecond * ExamplesPerStep, Ranks > 1 ? $" over {Ranks} ranks" : "");
        return string.Format(c, "step {0}/{1}  loss {2:0.0000} (avg {3:0.0000})  {4:0.00} it/s{5}  ETA {6}  mem {7} managed, {8} process",
            Step, TotalSteps, LastLoss, SmoothedLoss, StepsPerSecond, throughput, eta, FormatBytes(managedBytes), FormatBytes(processBytes));
    }

    public static string FormatDuration(TimeSpan span) =>
        span.TotalHours >= 1 ? $"{(int)span.TotalHours}h{span.Minutes:00}m"
        : span.TotalMinutes >= 1 ? $"{span.Minutes}m{span.Seconds:00}s"
        : $"{span.Seconds}s";

    public static string FormatBytes(long bytes) =>
        bytes >= 1L << 30 ? (bytes / (double)(1L << 30)).ToString("0.0", CultureInfo.InvariantCulture) + " GiB"
        : (bytes / (double)(1L << 20)).ToString("0", CultureInfo.InvariantCulture) + " MiB";
}

/// <summary>What to do with a step whose loss or gradient norm is not finite.</summary>
public enum NonFiniteDecision
{
    Apply,
    Skip,
}

/// <summary>Training stopped because too many steps in a row gave NaN or ∞.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>
/// The NaN/∞ policy: a step with a non-finite loss or gradient norm is skipped (no optimiser update) with a
/// warning; after <see cref="MaxConsecutive"/> such steps in a row the run stops, because it has diverged and more
/// steps would only burn time. A finite step resets the count.
/// </summary>
public sealed class NonFiniteGuard(int maxConsecutive = 5, Action<string>? warn = null)
{
    public int MaxConsecutive { get; } = maxConsecutive >= 1 ? maxConsecutive
        : throw new ArgumentOutOfRangeException(nameof(maxConsecutive), maxConsecutive, "allow at least one skipped step");

    public int Consecutive { get; private set; }
    public int TotalSkipped { get; private set; }
    public int TotalApplied { get; private set; }

    public NonFiniteDecision Check(int step, double loss, double gradientNorm)
    {
        if (double.IsFinite(loss) && double.IsFinite(gradientNorm))
        {
            Consecutive = 0;
            TotalApplied++;
            return NonFiniteDecision.Apply;
        }
        Consecutive++;
        TotalSkipped++;
        string what = !double.IsFinite(loss) ? $"loss is {loss}" : $"gradient norm is {gradientNorm}";
        if (Consecutive >= MaxConsecutive)
            throw new TrainingDivergedException(
                $"training diverged: {Consecutive} steps in a row (the last at step {step}) gave a non-finite value ({what}). " +
                "Lower the learning rate, keep gradient clipping on, or resume from the last checkpoint, which holds only finite values.");
        warn?.Invoke($"step {step}: {what}; skipping this step ({Consecutive} of at most {MaxConsecutive} in a row)");
        return NonFiniteDecision.Skip;
    }

    /// <summary>
    /// Before anything is saved: a run whose every step was skipped has learned nothing, and its adapters must not be
    /// written as if it had (a short run on NaN weights never reaches <see cref="MaxConsecutive"/>).
    /// </summary>
    public void RequireAnyApplied()
    {
        if (TotalSkipped > 0 && TotalApplied == 0)
            throw new TrainingDivergedException(
                $"training learned nothing: all {TotalSkipped} steps of this run gave a non-finite loss or gradient and were skipped, so nothing is saved. " +
                "Check the base weights (--weights) for NaN or ∞, and lower the learning rate.");
    }
}
