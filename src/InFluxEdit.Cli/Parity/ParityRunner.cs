using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Cli.Parity;

public enum ParityStatus { Passed, Failed, Skipped }

/// <summary>One compared tensor (or a whole case that could not run).</summary>
public sealed record ParityRow(string Case, string Tensor, double Error, double Tolerance, ParityStatus Status, string? Note = null);

/// <summary>
/// Runs the golden cases this build supports against the reference vectors and reports each tensor's
/// relative L2 error. Cases of kinds not built yet are reported as skipped, never as passed.
/// </summary>
public sealed class ParityRunner
{
    private readonly GoldenManifest _manifest;
    private readonly IBackend _backend;
    private readonly IReadOnlyList<CompiledModelInfo> _models;

    public ParityRunner(GoldenManifest manifest, IBackend backend, IReadOnlyList<CompiledModelInfo>? models = null)
    {
        _manifest = manifest;
        _backend = backend;
        _models = models ?? ModelCatalog.All;
    }

    /// <summary>Kinds this build runs; everything else is skipped with the reason.</summary>
    public static readonly IReadOnlyDictionary<string, string?> Kinds = new Dictionary<string, string?>
    {
        ["flux-forward"] = null,
        ["timestep-embedding"] = null,
    };

    public List<ParityRow> Run(GoldenCase goldenCase, string? outDir)
    {
        var computed = new Dictionary<string, HostTensor>();
        List<ParityRow> rows;
        try
        {
            rows = goldenCase.Kind switch
            {
                "flux-forward" => RunModelForward(goldenCase, computed),
                "timestep-embedding" => RunTimestepEmbedding(goldenCase, computed),
                _ => new List<ParityRow> { new(goldenCase.Name, "*", double.NaN, double.NaN, ParityStatus.Skipped, $"kind '{goldenCase.Kind}' is not built yet") },
            };
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or IOException or KeyNotFoundException)
        {
            rows = new List<ParityRow> { new(goldenCase.Name, "*", double.NaN, double.NaN, ParityStatus.Failed, e.Message) };
        }
        if (outDir != null && computed.Count > 0)
        {
            Directory.CreateDirectory(outDir);
            SafeTensorsWriter.Write(Path.Combine(outDir, goldenCase.Name + ".safetensors"), computed);
        }
        return rows;
    }

    private List<ParityRow> RunModelForward(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        var inputsCase = goldenCase.InputsFrom == null ? null : _manifest.Find(goldenCase.InputsFrom)
            ?? throw new InvalidDataException($"case {goldenCase.Name} takes inputs from unknown case {goldenCase.InputsFrom}");
        using var inputsFile = inputsCase == null ? null : SafeTensorsFile.Open(_manifest.PathOf(Require(inputsCase.Data, inputsCase, "data")));
        var inputs = inputsFile ?? data;

        var weightFiles = goldenCase.Weights.Select(w => SafeTensorsFile.Open(_manifest.PathOf(w))).ToList();
        try
        {
            var match = ModelRecognizer.Recognize(weightFiles[0], _models.Select(m => m.Descriptor));
            var info = _models.First(m => m.Descriptor == match.Model);
            var weights = WeightLoader.Load(info.Descriptor.Parameters, weightFiles, _backend);
            try
            {
                var model = info.Create(_backend, weights);
                var expected = data.Tensors.Where(t => t.Name.StartsWith("expected.", StringComparison.Ordinal))
                    .Select(t => t.Name["expected.".Length..]).ToList();
                var observer = new CollectingObserver(expected);
                var deviceInputs = model.InputNames.ToDictionary(name => name, name => _backend.Upload(inputs.ReadFloat32(name)));
                try
                {
                    var outputs = model.Run(deviceInputs, observer);
                    foreach (var (name, tensor) in outputs)
                    {
                        observer.Observe(name, _backend.Download(tensor, tensor.Shape));
                        tensor.Dispose();
                    }
                }
                finally
                {
                    foreach (var t in deviceInputs.Values) t.Dispose();
                }
                return Compare(goldenCase, data, expected, observer.Values, computed);
            }
            finally
            {
                foreach (var w in weights.Values) w.Dispose();
            }
        }
        finally
        {
            foreach (var f in weightFiles) f.Dispose();
        }
    }

    private List<ParityRow> RunTimestepEmbedding(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        var t = data.ReadFloat32("t");
        int dim = (int)(goldenCase.Number("dim") ?? 256);
        using var tDevice = _backend.Upload(t);
        using var embedding = _backend.Allocate(new[] { (int)t.Length, dim });
        _backend.TimestepEmbedding(embedding, tDevice.AsView().Reshape(1, (int)t.Length, 1), 1000f, 10000f);
        var name = $"timestep_embedding_{dim}";
        var values = new Dictionary<string, HostTensor> { [name] = _backend.Download(embedding, embedding.Shape) };
        return Compare(goldenCase, data, new[] { name }, values, computed);
    }

    private static List<ParityRow> Compare(GoldenCase goldenCase, SafeTensorsFile data, IEnumerable<string> names,
        IReadOnlyDictionary<string, HostTensor> values, Dictionary<string, HostTensor> computed)
    {
        var rows = new List<ParityRow>();
        foreach (string name in names)
        {
            double tolerance = goldenCase.ToleranceFor(name);
            if (!values.TryGetValue(name, out var actual))
            {
                rows.Add(new ParityRow(goldenCase.Name, name, double.NaN, tolerance, ParityStatus.Failed, "not computed by this build"));
                continue;
            }
            computed[name] = actual;
            var expected = data.ReadFloat32("expected." + name);
            if (expected.Length != actual.Length)
            {
                rows.Add(new ParityRow(goldenCase.Name, name, double.NaN, tolerance, ParityStatus.Failed,
                    $"shape {HostTensor.FormatShape(actual.Shape)} here, {HostTensor.FormatShape(expected.Shape)} expected"));
                continue;
            }
            double error = TensorComparison.RelativeL2(actual.Data, expected.Data);
            rows.Add(new ParityRow(goldenCase.Name, name, error, tolerance, error <= tolerance ? ParityStatus.Passed : ParityStatus.Failed));
        }
        return rows;
    }

    private static string Require(string? value, GoldenCase goldenCase, string what) =>
        value ?? throw new InvalidDataException($"case {goldenCase.Name} has no \"{what}\" in the manifest");

    private sealed class CollectingObserver : IActivationObserver
    {
        private readonly HashSet<string> _wanted;
        public CollectingObserver(IEnumerable<string> wanted) => _wanted = new HashSet<string>(wanted);
        public Dictionary<string, HostTensor> Values { get; } = new();
        public bool Wants(string name) => _wanted.Contains(name);
        public void Observe(string name, HostTensor value) => Values[name] = value;
    }
}
