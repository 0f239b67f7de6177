using System.Reflection;
using System.Text;
using System.Text.Json;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// The one place an exception becomes what the user reads: "error: MESSAGE" (the message names the file or option
/// and what to do), exit code 2. Messages are made safe for a terminal (control bytes from a binary file are shown
/// escaped, not written raw) and short (a long one is cut, with how to see all of it); the stack trace is printed
/// only with --verbose. An exception type the program does not throw on purpose is reported as a bug.
/// </summary>
public static class ErrorReport
{
    public const int ExitCode = 2;
    private const int MaxLines = 8, MaxLineLength = 400;

    /// <summary>The exception types that carry a message written for the user (bad input, missing files, limits).</summary>
    private static readonly Type[] UserErrors =
    [
        typeof(IOException), typeof(InvalidDataException), typeof(ArgumentException), typeof(InvalidOperationException),
        typeof(NotSupportedException), typeof(UnauthorizedAccessException), typeof(FormatException), typeof(JsonException),
        typeof(InsufficientMemoryException), typeof(OverflowException), typeof(Runtime.Training.TrainingDivergedException),
        typeof(Runtime.Distributed.ProcessGroupException), typeof(DllNotFoundException),
    ];

    public static int Write(Exception exception, TextWriter error, bool verbose)
    {
        error.WriteLine(Format(exception, verbose));
        if (verbose) error.WriteLine(exception.ToString());
        return ExitCode;
    }

    public static string Format(Exception exception, bool verbose)
    {
        var e = Unwrap(exception);
        string message = e switch
        {
            InsufficientMemoryException => e.Message,
            OutOfMemoryException => "ran out of memory: lower --resolution, the image size or the batch, or use --recompute",
            UnauthorizedAccessException => $"{e.Message} Check the path's permissions (or give a file where a file is expected).",
            ArgumentException argument when argument.ParamName != null => argument.Message.Replace($" (Parameter '{argument.ParamName}')", ""),
            _ => e.Message,
        };
        if (!UserErrors.Any(t => t.IsInstanceOfType(e)) && e is not OutOfMemoryException)
            message = $"internal error ({e.GetType().Name}): {message} — this is a bug; rerun with --verbose and report the stack trace";
        return "error: " + Shorten(Printable(message), verbose);
    }

    private static Exception Unwrap(Exception e) => e switch
    {
        AggregateException { InnerExceptions.Count: 1 } aggregate => Unwrap(aggregate.InnerExceptions[0]),
        TargetInvocationException { InnerException: { } inner } => Unwrap(inner),
        TypeInitializationException { InnerException: { } inner } => Unwrap(inner),
        _ => e,
    };

    /// <summary>Control characters and invalid text (a binary file quoted in a message) escaped as \xNN / \uNNNN; line breaks kept.</summary>
    public static string Printable(string text)
    {
        var result = new StringBuilder(text.Length);
        foreach (Rune rune in text.EnumerateRunes())
        {
            bool printable = !Rune.IsControl(rune) && rune != Rune.ReplacementChar
                && Rune.GetUnicodeCategory(rune) != System.Globalization.UnicodeCategory.Format;
            if (rune.Value == '\n' || printable)
                result.Append(rune.ToString());
            else if (rune.Value != '\r')
                result.Append(rune.Value <= 0xFF ? $"\\x{rune.Value:x2}" : $"\\u{rune.Value:x4}");
        }
        return result.ToString();
    }

    /// <summary>At most <see cref="MaxLines"/> lines of at most <see cref="MaxLineLength"/> characters, unless verbose.</summary>
    private static string Shorten(string message, bool verbose)
    {
        if (verbose) return message;
        var lines = message.Split('\n').Select(l => l.Length > MaxLineLength ? l[..MaxLineLength] + "…" : l).ToList();
        if (lines.Count <= MaxLines) return string.Join("\n", lines);
        return string.Join("\n", lines.Take(MaxLines)) + $"\n… {lines.Count - MaxLines} more lines (--verbose shows them all)";
    }
}
