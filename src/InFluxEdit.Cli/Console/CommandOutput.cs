using System.Diagnostics;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Training;
using Spectre.Console;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// Where one command's output goes. On a terminal: log lines, tables and live progress bars through Spectre.Console.
/// Redirected (CI logs, pipes, tests): plain lines with no ANSI codes or cursor movement, a stage's progress every 10%
/// on stderr. --quiet: nothing but errors. --json: the human-readable lines on stderr and, at the end, one
/// <see cref="CommandReport"/> on stdout with what the command wrote, its result and its timings.
/// </summary>
public sealed class CommandOutput
{
    /// <summary>Wide enough that a table in a log is never wrapped: a log has no width.</summary>
    private const int PlainWidth = 4096;

    /// <summary>The terminal's console, null when the output is plain.</summary>
    private readonly IAnsiConsole? _terminal;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<string> _written = [];
    private readonly Dictionary<string, double> _seconds = [];
    private LiveProgress? _live;

    private CommandOutput(string command, TextWriter log, TextWriter notes, bool json, IAnsiConsole? terminal)
    {
        Command = command;
        Json = json;
        _terminal = terminal;
        Log = terminal != null ? new ConsoleLineWriter(terminal) : log;
        Notes = terminal != null ? Log : notes;
    }

    /// <summary>The output of a command run from the command line, as its --quiet and --json say.</summary>
    public static CommandOutput ForProcess(string command, bool quiet, bool json)
    {
        // Under mpirun every rank runs the command and rank 0 speaks for the job: the others print nothing but errors.
        if (ProcessGroups.LauncherRank > 0) return new CommandOutput(command, TextWriter.Null, TextWriter.Null, json: false, null);
        if (quiet) return new CommandOutput(command, TextWriter.Null, TextWriter.Null, json, null);
        if (json) return new CommandOutput(command, System.Console.Error, System.Console.Error, json, null);
        bool terminal = !System.Console.IsOutputRedirected && !System.Console.IsErrorRedirected;
        return new CommandOutput(command, System.Console.Out, System.Console.Error, false, terminal ? AnsiConsole.Console : null);
    }

    /// <summary>Plain output into <paramref name="log"/> (progress lines on stderr): a caller that reads the log itself.</summary>
    public static CommandOutput Plain(TextWriter log) => new("", log, System.Console.Error, false, null);

    public string Command { get; }

    public bool Json { get; }

    /// <summary>What the command tells its user: stdout, or stderr with --json, or nowhere with --quiet.</summary>
    public TextWriter Log { get; }

    /// <summary>Side remarks and progress that are not the command's result: stderr, nowhere with --quiet.</summary>
    public TextWriter Notes { get; }

    /// <summary>The engine's stage progress: live bars on a terminal, else lines on <see cref="Notes"/>.</summary>
    public IProgress<StageProgress> Stages => _live ?? (IProgress<StageProgress>)new StageProgressLines(Notes);

    /// <summary>Training progress: log lines, with a live bar on a terminal.</summary>
    public IProgress<TrainProgress> Training => _live ?? (IProgress<TrainProgress>)new TrainProgressLines(Log);

    /// <summary>The command's own result for --json (a small record); null: none beyond the files and timings.</summary>
    public object? Result { get; set; }

    /// <summary>Why a command that returns a non-zero exit code without an exception failed, for --json.</summary>
    public string? Failure { get; set; }

    /// <summary>Records a file or folder the command wrote (reported by --json as a full path).</summary>
    public void Wrote(string? path)
    {
        if (path != null) _written.Add(Path.GetFullPath(path));
    }

    /// <summary>Records how long a part of the command took (reported by --json beside the total).</summary>
    public void Took(string part, TimeSpan time) => _seconds[part] = time.TotalSeconds;

    /// <summary>Runs the command, inside a live progress display when the output is a terminal.</summary>
    public int Run(Func<int> command)
    {
        if (_terminal == null) return command();
        return _terminal.Progress().AutoClear(true).HideCompleted(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                _live = new LiveProgress(context, Log);
                try { return command(); }
                finally { _live = null; }
            });
    }

    /// <summary>A table with these column headers: rounded on a terminal, markdown in a log.</summary>
    public Table Table(params string[] headers)
    {
        var table = new Table { Border = _terminal != null ? TableBorder.Rounded : TableBorder.Markdown };
        foreach (string header in headers) table.AddColumn(new TableColumn(new Spectre.Console.Text(header)));
        return table;
    }

    /// <summary>Writes a table made by <see cref="Table"/> to <see cref="Log"/>.</summary>
    public void Write(Table table)
    {
        if (_terminal != null)
        {
            _terminal.Write(table);
            return;
        }
        // Rendered without colours, ANSI codes or a width limit; the markdown border's blank top and bottom lines left out.
        var text = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No, Out = new AnsiConsoleOutput(text),
        });
        console.Profile.Width = PlainWidth;
        console.Write(table);
        foreach (string line in text.ToString().Split('\n').Select(l => l.TrimEnd()).Where(l => l.Length > 0))
            Log.WriteLine(line);
    }

    /// <summary>The end of a command: with --json, its report on stdout.</summary>
    public int Finish(int exitCode)
    {
        if (Json) WriteReport(exitCode, exitCode == 0 ? null : new CommandError(Failure ?? $"exit code {exitCode}", exitCode));
        return exitCode;
    }

    /// <summary>A command that threw: the error on stderr (<see cref="ErrorReport"/>) and, with --json, in the report.</summary>
    public int Fail(Exception exception, bool verbose)
    {
        int exitCode = ErrorReport.Write(exception, System.Console.Error, verbose);
        if (Json) WriteReport(exitCode, CommandError.From(exception, verbose));
        return exitCode;
    }

    private void WriteReport(int exitCode, CommandError? error)
    {
        var seconds = new Dictionary<string, double>(_seconds) { ["total"] = _clock.Elapsed.TotalSeconds };
        CommandReport.Write(new CommandReport(Command, exitCode, _written, Result, seconds, error), System.Console.Out);
    }
}

/// <summary>Rows of plain text in a Spectre.Console table (never parsed as markup: a path may hold '[').</summary>
public static class TableCells
{
    public static Table AddCells(this Table table, params string[] cells) => table.AddRow(cells.Select(c => new Spectre.Console.Text(c)));
}
