using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// Per-block recomputation (TrainingState.Recompute) against keeping every activation: the same gradients, bit for bit
/// (the same ops run in the same order), less activation memory at the peak, and nothing left allocated afterwards.
/// </summary>
public class RecomputeTests
{
    /// <summary>A model with adapters on a preset's targets (B random, so dA is not zero) and img_in trained whole.</summary>
    private sealed class Run : IDisposable
    {
        public readonly CpuBackend Backend = new();
        public readonly CompiledModel Model;
        private readonly IReadOnlyDictionary<string, DeviceTensor> _weights;
        private readonly Dictionary<string, DeviceTensor> _inputs;
        private readonly List<TrainableParameter> _parameters;
        private readonly HostTensor _outputWeights;

        public Run(CompiledModelInfo info, Func<CpuBackend, IReadOnlyDictionary<string, DeviceTensor>> weights,
            Func<CpuBackend, CompiledModel, Dictionary<string, DeviceTensor>> inputs, string preset)
        {
            _weights = weights(Backend);
            Model = info.Create(Backend, _weights);
            _inputs = inputs(Backend, Model);
            var random = new Random(5);
            var targets = LoraTargets.Preset(preset, info.Descriptor);
            _parameters = LoraInit.Create(Backend, targets, 4, LoraInitKind.Gaussian, new TrainingRandom(7));
            foreach (var up in _parameters.Where(p => p.Name.EndsWith(LoraModule.UpSuffix, StringComparison.Ordinal)))
            {
                using var values = Backend.Upload(RandomTensor(random, up.Value.Shape));
                Backend.Copy(up.Value, values);
            }
            var state = LoraInit.Attach(targets, _parameters, scale: 0.75f);
            foreach (string key in new[] { "img_in.weight", "img_in.bias" })
            {
                var gradient = Backend.Upload(new HostTensor(_weights[key].Shape));
                state.WeightGradients[key] = gradient;
                _parameters.Add(new TrainableParameter(key, _weights[key], gradient));
            }
            Model.Training = state;
            var output = Model.Run(_inputs)[Model.Entries[0].OutputNames[0]];
            _outputWeights = RandomTensor(random, output.Shape);
            output.Dispose();
        }

        public int AdapterCount => Model.Training!.Adapters.Values.Sum(a => a.Count);

        /// <summary>One ForwardBackward from zeroed gradients; every gradient by name, and the activation bytes at the peak.</summary>
        public (Dictionary<string, float[]> Gradients, long PeakBytes) Gradients(bool recompute)
        {
            foreach (var p in _parameters) ((ITrainingBackend)Backend).Zero(p.Gradient);
            Model.Training!.Recompute = recompute;
            long before = Backend.AllocatedBytes;
            Backend.ResetPeak();
            Model.ForwardBackward(_inputs, _ => Backend.Upload(_outputWeights));
            long peak = Backend.PeakAllocatedBytes - before;
            Backend.AllocatedBytes.ShouldBe(before, $"recompute {recompute}: every activation and gradient of the pass is released");
            return (_parameters.ToDictionary(p => p.Name, p => Backend.Download(p.Gradient, p.Gradient.Shape).Data), peak);
        }

        public void Dispose()
        {
            foreach (var p in _parameters.Where(p => !p.Name.StartsWith("img_in.", StringComparison.Ordinal))) p.Value.Dispose();
            foreach (var p in _parameters) p.Gradient.Dispose();
            foreach (var t in _inputs.Values.Concat(_weights.Values)) t.Dispose();
            Backend.Dispose();
        }
    }

    private static HostTensor RandomTensor(Random random, int[] shape)
    {
        var t = new HostTensor(shape);
        for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5);
        return t;
    }

    private static void ShouldMatchBitForBit(Run run)
    {
        var (kept, keptPeak) = run.Gradients(recompute: false);
        var (recomputed, recomputedPeak) = run.Gradients(recompute: true);
        recomputed.Keys.ShouldBe(kept.Keys, ignoreOrder: true);
        kept.Keys.Count(k => k.EndsWith(LoraModule.DownSuffix, StringComparison.Ordinal)).ShouldBe(run.AdapterCount);
        foreach (var (name, expected) in kept)
        {
            expected.ShouldContain(v => v != 0f, $"{name}: a gradient that is all zeros would prove nothing");
            var actual = recomputed[name];
            for (int i = 0; i < expected.Length; i++)
                if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                    throw new ShouldAssertException($"{name}[{i}]: {actual[i]:R} recomputing, {expected[i]:R} keeping every activation");
        }
        recomputedPeak.ShouldBeLessThan(keptPeak, "recomputing keeps only one block's activations at a time");
        // And again without recomputing: the first pass left nothing behind that the second one read.
        var (again, _) = run.Gradients(recompute: false);
        again["img_in.weight"].ShouldBe(kept["img_in.weight"]);
    }

    [Fact]
    public void TinyGoldenModelGivesTheSameGradientsWithRecomputation()
    {
        using var run = new Run(ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny"),
            backend =>
            {
                using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
                return WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, new[] { file }, backend);
            },
            (backend, model) =>
            {
                using var data = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
                return model.InputNames.ToDictionary(n => n, n => backend.Upload(data.ReadFloat32(n)));
            },
            preset: "kohya");
        ShouldMatchBitForBit(run);
    }

    [Fact]
    public void ModelOfOtherSizesGivesTheSameGradientsWithRecomputation()
    {
        // flux-mid: hidden 512, 8 heads, 4 + 4 blocks, real text widths; diffusers' split adapters on the fused layers.
        var info = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-mid");
        using var run = new Run(info,
            backend => RandomWeights.Upload(info.Descriptor, backend, seed: 3),
            (backend, _) => BenchInputs.Create(info.Descriptor, batch: 1, imageTokens: 12, textTokens: 5).ToDictionary(p => p.Key, p => backend.Upload(p.Value)),
            preset: "diffusers");
        ShouldMatchBitForBit(run);
    }
}
