namespace InFluxEdit.Generator.Common;

/// <summary>A problem found in a schema, kept free of Roslyn types so specs stay equatable and testable.</summary>
public sealed record SchemaDiagnostic(string Id, string Message, SourceSpan Span)
{
    public override string ToString() => $"{Span}: error {Id}: {Message}";
}

/// <summary>The diagnostic ids, one per class of schema error (docs/schema.md lists them).</summary>
public static class DiagnosticIds
{
    public const string InvalidJson = "IFX001";
    public const string InvalidSchema = "IFX002";
    public const string UnknownOp = "IFX003";
    public const string UnknownWeight = "IFX004";
    public const string UnusedWeight = "IFX005";
    public const string ShapeMismatch = "IFX006";
    public const string InvalidParams = "IFX007";
    public const string DuplicateName = "IFX008";
    public const string UnknownValue = "IFX009";
    public const string MissingGraph = "IFX010";
    public const string InvalidExpression = "IFX011";
}
