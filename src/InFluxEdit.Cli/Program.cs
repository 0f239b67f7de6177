using CommandLine;
using CommandLine.Text;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Cli.Console;

namespace InFluxEdit.Cli;

public static class Program
{
    /// <summary>The global option: with it an error also prints its stack trace, and long messages are not cut.</summary>
    public const string VerboseOption = "--verbose";

    /// <summary>Whether <see cref="VerboseOption"/> was given.</summary>
    public static bool Verbose { get; private set; }

    public static int Main(string[] args)
    {
        bool verbose = Verbose = args.Contains(VerboseOption);
        args = args.Where(a => a != VerboseOption).ToArray();
        var parser = new Parser(settings =>
        {
            settings.HelpWriter = null;
            settings.CaseInsensitiveEnumValues = true;
            settings.AllowMultiInstance = true;
        });
        var result = parser.ParseArguments<ParityOptions, EditOptions, TrainOptions, BenchOptions, ModelsOptions, InspectOptions, DatasetOptions, CompareOptions, TrainVaeOptions, PretrainToyOptions, DemoOptions, ConvertOptions, LoraOptions, DoctorOptions, MemoryOptions>(args);
        // --quiet, --json and whether stdout is a terminal decide where the command prints (none before parsing succeeds).
        var output = (result.Value as OutputOptions)?.CommandOutput;
        int Dispatch() => result.MapResult(
                (ParityOptions o) => ParityCommand.Run(o),
                (EditOptions o) => EditCommand.Run(o),
                (BenchOptions o) => BenchCommand.Run(o),
                (ModelsOptions o) => ModelsCommand.List(o),
                (InspectOptions o) => ModelsCommand.Inspect(o),
                (TrainOptions o) => TrainCommand.Run(o),
                (DatasetOptions o) => DatasetCommand.Run(o),
                (CompareOptions o) => CompareCommand.Run(o),
                (PretrainToyOptions o) => PretrainToyCommand.Run(o),
                (DemoOptions o) => DemoCommand.Run(o),
                (TrainVaeOptions o) => TrainVaeCommand.Run(o),
                (ConvertOptions o) => ConvertCommand.Run(o),
                (LoraOptions o) => LoraCommand.Run(o),
                (DoctorOptions o) => DoctorCommand.Run(o),
                (MemoryOptions o) => MemoryCommand.Run(o),
                errors => ShowHelp(result, errors, args.Contains("--json")));
        try
        {
            return output == null ? Dispatch() : output.Finish(output.Run(Dispatch));
        }
        catch (Exception e)
        {
            return output?.Fail(e, verbose) ?? ErrorReport.Write(e, System.Console.Error, verbose);
        }
    }

    private static int ShowHelp<T>(ParserResult<T> result, IEnumerable<Error> errors, bool json)
    {
        if (errors.Any(e => e.Tag == ErrorType.VersionRequestedError))
        {
            System.Console.Out.WriteLine(HeadingInfo.Default);
            return 0;
        }
        // Without a verb (or with an unknown one) the help lists the commands; with one, that command's options.
        bool listCommands = result.TypeInfo.Current == typeof(NullInstance);
        var help = HelpText.AutoBuild(result, h =>
        {
            h.Heading = "influx-cli — train and apply FLUX.1 Fill editing LoRAs (compiled models from schemas/*.json)";
            h.Copyright = $"Global option: {VerboseOption} (with any command) prints an error's stack trace and its whole message. For scripts every command takes --quiet (errors only) and --json (one result object on stdout).";
            h.AddDashesToOption = true;
            return HelpText.DefaultParsingErrorsHandler(result, h);
        }, e => e, verbsIndex: listCommands);
        bool isHelp = errors.All(e => e.Tag is ErrorType.HelpRequestedError or ErrorType.HelpVerbRequestedError or ErrorType.VersionRequestedError);
        if (json && !isHelp)
        {
            // A script that asked for --json gets its one object even when the arguments are wrong.
            var sentences = SentenceBuilder.Create();
            string message = HelpText.RenderParsingErrorsText(result, sentences.FormatError, sentences.FormatMutuallyExclusiveSetErrors, 0);
            string verb = result.TypeInfo.Current.GetCustomAttributes(typeof(VerbAttribute), false).OfType<VerbAttribute>().FirstOrDefault()?.Name ?? "";
            CommandReport.Write(new CommandReport(verb, 1, [], null, new Dictionary<string, double> { ["total"] = 0 }, new CommandError(message.Trim(), 1)), System.Console.Out);
        }
        (isHelp ? System.Console.Out : System.Console.Error).WriteLine(help);
        return isHelp ? 0 : 1;
    }
}
