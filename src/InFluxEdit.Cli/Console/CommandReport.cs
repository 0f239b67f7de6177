using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace InFluxEdit.Cli.Console;

/// <summary>
/// What --json prints: one object per command on stdout, on one line. <paramref name="Written"/> holds the full
/// paths of the files and folders it wrote, <paramref name="Result"/> its own values (metrics, models, scores),
/// <paramref name="Seconds"/> its timings ("total" always), <paramref name="Error"/> why it failed (null when it did not).
/// </summary>
public sealed record CommandReport(string Command, int ExitCode, IReadOnlyList<string> Written, object? Result,
    IReadOnlyDictionary<string, double> Seconds, CommandError? Error)
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DictionaryKeyPolicy = null,
        // Paths and messages as they are ('×', quotes), not \uXXXX: this goes to a terminal or a script, never into HTML.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        // A metric that is not a number (a NaN error of a skipped parity case) is written as the string "NaN", not refused.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public static void Write(CommandReport report, TextWriter output) => output.WriteLine(JsonSerializer.Serialize(report, Options));
}

/// <summary>A failed command: the message the user reads on stderr (without "error: ") and the exit code.</summary>
public sealed record CommandError(string Message, int ExitCode)
{
    public static CommandError From(Exception exception, bool verbose) =>
        new(ErrorReport.Format(exception, verbose)["error: ".Length..], ErrorReport.ExitCode);
}
