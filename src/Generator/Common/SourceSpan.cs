namespace InFluxEdit.Generator.Common;

/// <summary>Where something stands in a schema file (0-based line and column, as Roslyn counts), for diagnostics.</summary>
public readonly record struct SourceSpan(string Path, int Start, int Length, int Line, int Column, int EndLine, int EndColumn)
{
    public override string ToString() => $"{Path}({Line + 1},{Column + 1})";
}
