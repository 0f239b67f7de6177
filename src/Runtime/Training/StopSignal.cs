using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// A request to stop a long run at the next safe point (after the current step, with a checkpoint), from Ctrl-C
/// (SIGINT) or SIGTERM, exposed as a <see cref="CancellationToken"/>. The first signal is caught and only requests the
/// stop; a second SIGINT ends the process at once, for a user who will not wait for the step to finish.
/// </summary>
public sealed class StopSignal : IDisposable
{
    private readonly CancellationTokenSource _source = new();
    private readonly List<PosixSignalRegistration> _registrations = new();
    private readonly Action<string>? _note;

    private StopSignal(Action<string>? note) => _note = note;

    /// <summary>A signal nothing raises except <see cref="Request"/> (for callers that handle stops themselves, and tests).</summary>
    public static StopSignal Manual() => new(null);

    /// <summary>Listens to this process's SIGINT and SIGTERM until disposed; <paramref name="note"/> hears that a stop was requested.</summary>
    public static StopSignal FromProcessSignals(Action<string> note)
    {
        var signal = new StopSignal(note);
        foreach (var posix in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
            signal._registrations.Add(PosixSignalRegistration.Create(posix, context => signal.OnSignal(context)));
        return signal;
    }

    public CancellationToken Token => _source.Token;

    public bool IsRequested => _source.IsCancellationRequested;

    /// <summary>The signal's name, or null before a stop was requested.</summary>
    public string? SignalName { get; private set; }

    /// <summary>The conventional exit code of a process ended by the signal: 128 + its number (SIGINT 130, SIGTERM 143).</summary>
    public int ExitCode { get; private set; }

    /// <summary>Requests the stop as if <paramref name="signal"/> had arrived.</summary>
    public void Request(PosixSignal signal)
    {
        lock (_source)
        {
            if (SignalName != null) return;
            (SignalName, ExitCode) = signal == PosixSignal.SIGTERM ? ("SIGTERM", 128 + 15) : ("SIGINT", 128 + 2);
        }
        _source.Cancel();
    }

    private void OnSignal(PosixSignalContext context)
    {
        if (IsRequested && context.Signal == PosixSignal.SIGINT)
        {
            _note?.Invoke("second Ctrl-C: stopping now, without a checkpoint of the current step");
            // Not cancelled: the runtime ends the process as SIGINT's default does.
            return;
        }
        context.Cancel = true;
        if (IsRequested) return;
        Request(context.Signal);
        _note?.Invoke($"{SignalName}: stopping after the current step with a checkpoint (Ctrl-C again stops at once)");
    }

    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        _source.Dispose();
    }
}
