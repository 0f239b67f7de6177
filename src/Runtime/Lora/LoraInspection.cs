using System.Globalization;
using InFluxEdit.Runtime.Models;

namespace InFluxEdit.Runtime.Lora;

/// <summary>What `lora inspect` says about a file: which model it fits, its formats, ranks, alphas, layers and skips.</summary>
public static class LoraInspection
{
    /// <summary>
    /// The first of <paramref name="candidates"/> (models whose schemas name LoRA layers) that the file fits, read for
    /// description; when none fits, the error of the one it fitted best (most adapters named, a shape wrong).
    /// </summary>
    public static (ModelDescriptor Model, LoraContent Content) Recognise(string path, IReadOnlyList<ModelDescriptor> candidates, LoraReadOptions options)
    {
        var errors = new List<Exception>();
        foreach (var model in candidates)
        {
            try
            {
                return (model, LoraReader.Read(path, new LoraNames(model), options));
            }
            catch (LoraMismatchException e)
            {
                errors.Add(e);
            }
        }
        // "has no key that applies" means the names are foreign; a named key with a wrong shape is the better clue.
        throw errors.FirstOrDefault(e => !e.Message.Contains("has no key that applies", StringComparison.Ordinal)) ?? errors.FirstOrDefault()
              ?? new ArgumentException("no compiled model declares LoRA layer names");
    }

    public static IEnumerable<string> Describe(string path, ModelDescriptor model, LoraContent content)
    {
        var c = CultureInfo.InvariantCulture;
        yield return $"file: {path}";
        yield return $"model: {model.Name} (schemas/{model.SchemaFile}): its layer names and shapes fit";
        yield return $"formats: {string.Join(", ", content.Formats)}";
        var ranks = content.Adapters.Where(a => a.Rank != null).Select(a => a.Rank!.Value).Distinct().Order().ToList();
        yield return $"adapters: {content.Adapters.Count} ({string.Join(", ", content.Adapters.GroupBy(a => a.Kind).Select(g => $"{g.Count()} {g.Key}"))})" +
                     (ranks.Count > 0 ? $", rank {string.Join("/", ranks)}" : "");
        var alphas = content.Adapters.Where(a => a.Rank != null)
            .GroupBy(a => (a.Alpha, a.Scale)).Select(g => string.Create(c,
                $"{(g.Key.Alpha is { } alpha ? $"alpha {alpha:G6}" : "no alpha")} → scale {g.Key.Scale:G6} ({g.Count()})")).ToList();
        if (alphas.Count > 0) yield return $"alpha: {string.Join("; ", alphas)}";
        yield return "layers (schema names):";
        foreach (var adapter in content.Adapters.OrderBy(a => a.Modules[0], StringComparer.Ordinal))
            yield return $"  {string.Join(" + ", adapter.Modules)} ← {adapter.Name} [{adapter.Kind}" +
                         (adapter.Rank is { } rank ? string.Create(c, $", rank {rank}, scale {adapter.Scale:G6}") : "") + "]";
        var whole = content.Dense.Select(d => d.Parameter).Distinct().Order(StringComparer.Ordinal).ToList();
        yield return whole.Count > 0 ? $"full-weight changes: {string.Join(", ", whole)}" : "full-weight changes: none (no trained input layer)";
        foreach (string line in content.SkipReport()) yield return line;
        if (content.Skipped.Count == 0) yield return "skipped: nothing";
    }
}
