using System.Globalization;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Lora;

/// <summary>Scale·Up·Down added to rows [RowOffset, RowOffset + Up rows) of <see cref="Module"/>'s weight ([rows, in]).</summary>
public sealed record LowRankDelta(string Module, int RowOffset, HostTensor Down, HostTensor Up, float Scale)
{
    public int Rank => Down.Shape[0];
    public int Rows => Up.Shape[0];
}

/// <summary>A change added to rows [RowOffset, …) of a parameter: a weight's [rows, in] or a bias's [rows], already scaled.</summary>
public sealed record DenseDelta(string Parameter, int RowOffset, HostTensor Value)
{
    public int Rows => Value.Shape[0];
}

/// <summary>Keys a file carries that this build does not apply, grouped ("lora_te1_*"): what they are and why they are passed over.</summary>
public sealed record SkippedKeys(string Group, string What, string Why, IReadOnlyList<string> Keys);

/// <summary>One adapter of a file as read: its name, kind (lora, lokr, loha, diff, …), rank and alpha where it has them.</summary>
public sealed record AdapterSummary(string Name, string Naming, string Kind, int? Rank, float? Alpha, float Scale, IReadOnlyList<string> Modules);

/// <summary>
/// A LoRA file (or several merged) as changes to a model's parameters, under the model's own parameter names: low-rank
/// products kept as factors (so they convert exactly), everything else (full-weight diffs, LoKr, LoHa, DoRA) as dense rows.
/// </summary>
public sealed class LoraContent
{
    public List<LowRankDelta> LowRank { get; } = [];
    public List<DenseDelta> Dense { get; } = [];
    public List<SkippedKeys> Skipped { get; } = [];
    public List<AdapterSummary> Adapters { get; } = [];

    public bool IsEmpty => LowRank.Count == 0 && Dense.Count == 0;

    /// <summary>The file formats the adapters came in ("kohya", "diffusers", "xlabs", …), sorted.</summary>
    public IReadOnlyList<string> Formats => Adapters.Select(a => a.Naming).Concat(Adapters.Select(a => a.Kind))
        .Where(f => f != "lora").Distinct().Order(StringComparer.Ordinal).ToList();

    /// <summary>Everything of <paramref name="other"/> added to this content (several files applied at once).</summary>
    public void Add(LoraContent other)
    {
        LowRank.AddRange(other.LowRank);
        Dense.AddRange(other.Dense);
        Skipped.AddRange(other.Skipped);
        Adapters.AddRange(other.Adapters);
    }

    /// <summary>One line per kind of skipped keys: "skipped 264 text-encoder keys (lora_te1_*): this build applies transformer adapters only".</summary>
    public IEnumerable<string> SkipReport() =>
        Skipped.GroupBy(s => (s.What, s.Why)).Select(group =>
        {
            var groups = group.ToList();
            int count = groups.Sum(g => g.Keys.Count);
            string shown = string.Join(", ", groups.Take(8).Select(g => g.Group)) + (groups.Count > 8 ? $", … {groups.Count - 8} more" : "");
            return string.Create(CultureInfo.InvariantCulture, $"skipped {count} {group.Key.What} ({shown}): {group.Key.Why}");
        });

    /// <summary>The summed change to every parameter touched, each at its full shape.</summary>
    public Dictionary<string, HostTensor> ToDeltas(ModelDescriptor model)
    {
        var shapes = model.Parameters.ToDictionary(p => p.Name, p => p.Shape, StringComparer.Ordinal);
        var deltas = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        HostTensor For(string parameter) => deltas.TryGetValue(parameter, out var d) ? d : deltas[parameter] = new HostTensor((int[])shapes[parameter].Clone());
        foreach (var update in LowRank) AddProduct(For(update.Module + ".weight"), update);
        foreach (var update in Dense)
        {
            var target = For(update.Parameter);
            int width = target.Rank == 1 ? 1 : target.Shape[1];
            var rows = target.Data.AsSpan(update.RowOffset * width, update.Value.Data.Length);
            for (int i = 0; i < rows.Length; i++) rows[i] += update.Value.Data[i];
        }
        return deltas;
    }

    /// <summary>delta[rowOffset.., :] += scale · up · down, on the fast CPU GEMM (up to 12288 × 3072 × rank per layer).</summary>
    internal static unsafe void AddProduct(HostTensor delta, LowRankDelta update)
    {
        var product = Product(update);
        var target = delta.Data.AsSpan(update.RowOffset * delta.Shape[1], product.Length);
        for (int i = 0; i < product.Length; i++) target[i] += product[i];
    }

    /// <summary>scale · up · down as a dense [rows, in] array.</summary>
    internal static unsafe float[] Product(LowRankDelta update)
    {
        int rows = update.Rows, rank = update.Rank, columns = update.Down.Shape[1];
        var scaledUp = update.Up.Data.Select(v => v * update.Scale).ToArray();
        var downTransposed = new float[columns * rank];
        for (int r = 0; r < rank; r++)
            for (int c = 0; c < columns; c++)
                downTransposed[c * rank + r] = update.Down.Data[r * columns + c];
        var product = new float[rows * columns];
        if (rank == 0) return product;
        fixed (float* a = scaledUp, b = downTransposed, c = product)
            CpuGemm.Multiply(rows, columns, rank, a, rank, b, rank, c, columns);
        return product;
    }
}
