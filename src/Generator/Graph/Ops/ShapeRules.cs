using System.Collections.Generic;
using System.Linq;

namespace InFluxEdit.Generator.Graph.Ops;

internal static class ShapeRules
{
    public static IReadOnlyList<SymbolicDim> WithLast(IReadOnlyList<SymbolicDim> shape, SymbolicDim last) =>
        shape.Take(shape.Count - 1).Concat(new[] { last }).ToList();

    public static IReadOnlyList<SymbolicDim> WithAxis(IReadOnlyList<SymbolicDim> shape, int axis, SymbolicDim size) =>
        shape.Select((d, i) => i == axis ? size : d).ToList();

    public static bool Same(IReadOnlyList<SymbolicDim> a, IReadOnlyList<SymbolicDim> b) =>
        a.Count == b.Count && a.Zip(b, (x, y) => x.Equals(y)).All(e => e);

    public static string Text(IReadOnlyList<SymbolicDim> shape) => "[" + string.Join(", ", shape) + "]";

    public static string Text(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>The C# fold a backend op sees: (batch, rows, cols) as expressions.</summary>
    public static (string Batch, string Rows, string Cols) Fold(IReadOnlyList<SymbolicDim> shape, IForwardEmitter e)
    {
        string cols = shape.Count >= 1 ? e.Dim(shape[shape.Count - 1]) : "1";
        string rows = shape.Count >= 2 ? e.Dim(shape[shape.Count - 2]) : "1";
        var leading = shape.Take(shape.Count - 2).Select(e.Dim).ToList();
        return (leading.Count == 0 ? "1" : string.Join(" * ", leading), rows, cols);
    }
}
