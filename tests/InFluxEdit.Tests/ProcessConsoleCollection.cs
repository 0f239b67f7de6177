namespace InFluxEdit.Tests;

/// <summary>
/// Tests that swap the process's Console.Error to read what Program.Main reports. They run alone: any other test
/// writing a progress bar to stderr meanwhile would land in the captured text.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessConsoleCollection
{
    public const string Name = "process console";
}
