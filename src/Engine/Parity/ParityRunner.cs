using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Parity;

public enum ParityStatus { Passed, Failed, Skipped }

/// <summary>One compared tensor (or a whole case that could not run).</summary>
public sealed record ParityRow(string Case, string Tensor, double Error, double Tolerance, ParityStatus Status, string? Note = null);

/// <summary>
/// Runs the golden cases this build supports against the reference vectors and reports each tensor's
/// relative L2 error. Cases of kinds not built yet are reported as skipped, never as passed.
/// </summary>
public sealed partial class ParityRunner
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
        ["schedules"] = null,
        ["methods-conditioning"] = null,
        ["vae"] = null,
        ["fill-pipeline"] = null,
        ["flux-lora-grad"] = null,
        ["clip-tokenizer"] = null,
        ["t5-tokenizer"] = null,
        ["clip-text"] = null,
        ["t5-encoder"] = null,
    };

    /// <summary>
    /// The bar of a run in bf16 precision (CUDA's --precision bf16: bf16 products and activations): relative L2 ≤ 1e-2
    /// for every tensor whose manifest tolerance is tighter. Tokenizer cases keep theirs (exact ids: no arithmetic).
    /// </summary>
    public const double BFloat16Tolerance = 1e-2;

    /// <summary>The least tolerance of every numeric case: 0, or <see cref="BFloat16Tolerance"/> for a bf16 run.</summary>
    public double ToleranceFloor { get; init; }

    public List<ParityRow> Run(GoldenCase goldenCase, string? outDir)
    {
        if (ToleranceFloor > 0 && goldenCase.Kind is not ("clip-tokenizer" or "t5-tokenizer"))
            goldenCase = new GoldenCase(goldenCase.Name, goldenCase.Json) { ToleranceFloor = ToleranceFloor };
        var computed = new Dictionary<string, HostTensor>();
        List<ParityRow> rows;
        try
        {
            rows = goldenCase.Kind switch
            {
                "flux-forward" => RunModelForward(goldenCase, computed),
                "timestep-embedding" => RunTimestepEmbedding(goldenCase, computed),
                "schedules" => RunSchedules(goldenCase, computed),
                "methods-conditioning" => RunMethodsConditioning(goldenCase, computed),
                "vae" => RunVae(goldenCase, computed),
                "fill-pipeline" => RunFillPipeline(goldenCase, computed),
                "flux-lora-grad" => RunLoraGradients(goldenCase, computed),
                "clip-tokenizer" => RunClipTokenizer(goldenCase, computed),
                "t5-tokenizer" => RunT5Tokenizer(goldenCase, computed),
                "clip-text" => RunClipText(goldenCase, computed),
                "t5-encoder" => RunT5Encoder(goldenCase, computed),
                _ => new List<ParityRow> { new(goldenCase.Name, "*", double.NaN, double.NaN, ParityStatus.Skipped, $"kind '{goldenCase.Kind}' is not built yet") },
            };
        }
        catch (MissingModelFamilyException e)
        {
            // The case needs a model whose schema is not in this build: not run, so not passed either.
            rows = new List<ParityRow> { new(goldenCase.Name, "*", double.NaN, double.NaN, ParityStatus.Skipped, e.Message) };
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
            var weights = WeightLoader.Load(info.Descriptor.Parameters, weightFiles, _backend, ignored: info.Descriptor.Ignores);
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

    /// <summary>
    /// schedules.json: {"schedules": {"STEPSxSEQLEN[_noshift]": [t0, …, tN]}}, every list against
    /// <see cref="FlowMatchSchedule"/> with the case's base_shift and max_shift.
    /// </summary>
    private List<ParityRow> RunSchedules(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        string path = _manifest.PathOf(Require(goldenCase.Data, goldenCase, "data"));
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        if (!document.RootElement.TryGetProperty("schedules", out var schedules) || schedules.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path} has no \"schedules\" object");
        double baseShift = goldenCase.Number("base_shift") ?? 0.5, maxShift = goldenCase.Number("max_shift") ?? 1.15;
        var expected = new Dictionary<string, HostTensor>();
        var values = new Dictionary<string, HostTensor>();
        var rows = new List<ParityRow>();
        foreach (var entry in schedules.EnumerateObject())
        {
            var key = Regex.Match(entry.Name, @"^(\d+)x(\d+)(_noshift)?$");
            if (!key.Success)
            {
                rows.Add(new ParityRow(goldenCase.Name, entry.Name, double.NaN, goldenCase.ToleranceFor(entry.Name), ParityStatus.Failed,
                    "key is not STEPSxIMAGE_SEQ_LEN[_noshift]"));
                continue;
            }
            int steps = int.Parse(key.Groups[1].Value, CultureInfo.InvariantCulture);
            int sequenceLength = int.Parse(key.Groups[2].Value, CultureInfo.InvariantCulture);
            double[] schedule = key.Groups[3].Success
                ? FlowMatchSchedule.Linear(steps)
                : FlowMatchSchedule.Shifted(steps, sequenceLength, baseShift, maxShift);
            values[entry.Name] = ToTensor(schedule);
            expected[entry.Name] = ToTensor(entry.Value.EnumerateArray().Select(v => v.GetDouble()).ToArray());
        }
        rows.AddRange(Compare(goldenCase, name => expected[name], expected.Keys, values, computed));
        return rows;
    }

    /// <summary>The conditioning and training latents of the channel and concat methods, through the case's VAE.</summary>
    private List<ParityRow> RunMethodsConditioning(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        using var vae = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 0)), VaeCodec.Family, _backend, _models);
        var source = ImageFile.LoadRgb(_manifest.PathOf(Require(goldenCase.File("source"), goldenCase, "files.source")));
        var target = ImageFile.LoadRgb(_manifest.PathOf(Require(goldenCase.File("target"), goldenCase, "files.target")));
        HostTensor Encode(HostTensor image) => VaeCodec.Encode(vae.Model, image);

        var values = new Dictionary<string, HostTensor>();
        foreach (var (method, prefix) in new[] { (EditMethod.Channel, "channel"), (EditMethod.Concat, "concat") })
        {
            var condition = FillConditioning.Build(method, source, null, Encode);
            values[prefix + ".img_cond"] = condition.ImgCond;
            values[prefix + ".img_ids"] = condition.ImgIds;
            values[prefix + ".x0"] = FillConditioning.TrainingTarget(method, source, target, Encode);
        }
        return Compare(goldenCase, data, ExpectedNames(data), values, computed);
    }

    private List<ParityRow> RunVae(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        using var vae = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 0)), VaeCodec.Family, _backend, _models);
        var values = new Dictionary<string, HostTensor>
        {
            ["z"] = VaeCodec.Encode(vae.Model, data.ReadFloat32("image")),
            // Decoding the reference z, not ours, so an encoder error is not reported a second time as a decoder one.
            ["decoded"] = VaeCodec.Decode(vae.Model, data.ReadFloat32("expected.z")),
        };
        return Compare(goldenCase, data, ExpectedNames(data), values, computed);
    }

    /// <summary>The whole fill edit: the case's image and mask files, its noise and text stand-ins, steps and guidance.</summary>
    private List<ParityRow> RunFillPipeline(GoldenCase goldenCase, Dictionary<string, HostTensor> computed)
    {
        using var data = SafeTensorsFile.Open(_manifest.PathOf(Require(goldenCase.Data, goldenCase, "data")));
        using var vae = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 1)), VaeCodec.Family, _backend, _models);
        using var transformer = LoadedModel.Load(_manifest.PathOf(RequireWeight(goldenCase, 0)), FillPipeline.TransformerFamily, _backend, _models);
        // The references decode whole images: parity must hold at any size, so never tile.
        var pipeline = new FillPipeline(transformer.Model, vae.Model, VaeTiling.Off);
        var request = new FillEditRequest(
            Image: ImageFile.LoadRgb(_manifest.PathOf(Require(goldenCase.File("image"), goldenCase, "files.image"))),
            Mask: ImageFile.LoadMask(_manifest.PathOf(Require(goldenCase.File("mask"), goldenCase, "files.mask"))),
            Method: EditMethod.Fill,
            Text: new TextConditioning(data.ReadFloat32(TextConditioning.TxtName), data.ReadFloat32(TextConditioning.VecName)),
            Steps: (int)(goldenCase.Number("steps") ?? throw new InvalidDataException($"case {goldenCase.Name} has no \"steps\"")),
            Guidance: goldenCase.Number("guidance") ?? throw new InvalidDataException($"case {goldenCase.Name} has no \"guidance\""),
            Noise: data.ReadFloat32("noise"));
        var result = pipeline.Edit(request);
        var values = new Dictionary<string, HostTensor>
        {
            ["img"] = result.Img,
            ["img_ids"] = result.ImgIds,
            ["img_cond"] = result.ImgCond,
            ["timesteps"] = ToTensor(result.Timesteps),
            ["latent"] = result.Latent,
            ["unpacked"] = result.Unpacked,
            ["image"] = result.Decoded,
        };
        return Compare(goldenCase, data, ExpectedNames(data), values, computed);
    }

    private static List<string> ExpectedNames(SafeTensorsFile data) =>
        data.Tensors.Where(t => t.Name.StartsWith("expected.", StringComparison.Ordinal)).Select(t => t.Name["expected.".Length..]).ToList();

    private static HostTensor ToTensor(IReadOnlyList<double> values) =>
        new(new[] { values.Count }, values.Select(v => (float)v).ToArray());

    private static string RequireWeight(GoldenCase goldenCase, int index) =>
        goldenCase.Weights.Count > index
            ? goldenCase.Weights[index]
            : throw new InvalidDataException($"case {goldenCase.Name} lists {goldenCase.Weights.Count} weight files; it needs at least {index + 1}");

    private static List<ParityRow> Compare(GoldenCase goldenCase, SafeTensorsFile data, IEnumerable<string> names,
        IReadOnlyDictionary<string, HostTensor> values, Dictionary<string, HostTensor> computed) =>
        Compare(goldenCase, name => data.ReadFloat32("expected." + name), names, values, computed);

    private static List<ParityRow> Compare(GoldenCase goldenCase, Func<string, HostTensor> expectedOf, IEnumerable<string> names,
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
            var expected = expectedOf(name);
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
