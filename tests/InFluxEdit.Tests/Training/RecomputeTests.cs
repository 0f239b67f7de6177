using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
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
        public readonly IBackend Backend;
        private readonly IMemoryStatistics _memory;
        public readonly CompiledModel Model;
        private readonly IReadOnlyDictionary<string, DeviceTensor> _weights;
        private readonly Dictionary<string, DeviceTensor> _inputs;
        private readonly List<TrainableParameter> _parameters;
        private readonly HostTensor _outputWeights;

        /// <param name="backend">The CPU backend when null.</param>
        public Run(CompiledModelInfo info, Func<IBackend, IReadOnlyDictionary<string, DeviceTensor>> weights,
            Func<IBackend, CompiledModel, Dictionary<string, DeviceTensor>> inputs, string preset, IBackend? backend = null)
        {
            Backend = backend ?? new CpuBackend();
            _memory = (IMemoryStatistics)(Backend is CountingBackend counting ? counting.Inner : Backend);
            _weights = weights(Backend);
            Model = info.Create(Backend, _weights);
            _inputs = inputs(Backend, Model);
            var random = new Random(5);
            var targets = LoraTargets.Preset(preset, info.Descriptor);
            _parameters = LoraInit.Create(Backend, targets, 4, LoraInitKind.Gaussian, new TrainingRandom(7));
            foreach (var up in _parameters.Where(p => p.Name.EndsWith(LoraModule.UpSuffix, StringComparison.Ordinal)))
            {
                using var values = Backend.Upload(RandomTensor(random, up.Value.Shape));
                Backend.Copy(up.Value.AsView(), values.AsView());
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

        /// <summary>
        /// One ForwardBackward from zeroed gradients; every gradient by name, and the activation bytes at the peak (a
        /// GPU pool's parked buffers are freed before and after, so its count is what the pass holds).
        /// </summary>
        public (Dictionary<string, float[]> Gradients, long PeakBytes) Gradients(bool recompute, bool offloadCheckpoints = false)
        {
            foreach (var p in _parameters) ((ITrainingBackend)Backend).Zero(p.Gradient);
            (Model.Training!.Recompute, Model.Training.OffloadCheckpoints) = (recompute, offloadCheckpoints);
            Backend.ReleaseCachedMemory();
            long before = _memory.AllocatedBytes;
            _memory.ResetPeak();
            Model.ForwardBackward(_inputs, _ => Backend.Upload(_outputWeights));
            long peak = _memory.PeakAllocatedBytes - before;
            Backend.ReleaseCachedMemory();
            _memory.AllocatedBytes.ShouldBe(before, $"recompute {recompute}: every activation and gradient of the pass is released");
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
        kept.Keys.Count(k => k.EndsWith(LoraModule.DownSuffix, StringComparison.Ordinal)).ShouldBe(run.AdapterCount);
        ShouldBeTheSame(recomputed, kept, "recomputing", "keeping every activation");
        recomputedPeak.ShouldBeLessThan(keptPeak, "recomputing keeps only one block's activations at a time");
        // And again without recomputing: the first pass left nothing behind that the second one read.
        var (again, _) = run.Gradients(recompute: false);
        again["img_in.weight"].ShouldBe(kept["img_in.weight"]);
    }

    private static void ShouldBeTheSame(Dictionary<string, float[]> actual, Dictionary<string, float[]> expected, string how, string against)
    {
        actual.Keys.ShouldBe(expected.Keys, ignoreOrder: true);
        foreach (var (name, values) in expected)
        {
            values.ShouldContain(v => v != 0f, $"{name}: a gradient that is all zeros would prove nothing");
            for (int i = 0; i < values.Length; i++)
                if (BitConverter.SingleToInt32Bits(actual[name][i]) != BitConverter.SingleToInt32Bits(values[i]))
                    throw new ShouldAssertException($"{name}[{i}]: {actual[name][i]:R} {how}, {values[i]:R} {against}");
        }
    }

    /// <summary>
    /// The block boundaries moved to host memory after the blocks that read them and brought back one block ahead of
    /// their backward (TrainingState.OffloadCheckpoints), on the ILGPU simulator, whose tensors are device buffers and
    /// throw when read while moved: the same gradients with and without recomputation, every move undone. (What it
    /// saves shows at size: MemoryPlanTests hold the plan to this simulator's count, and the 12B plan holds 3 GB less.)
    /// </summary>
    [Fact]
    public void CheckpointsInHostMemoryGiveTheSameGradientsOnTheSimulator()
    {
        // The tiny golden graph (2 double and 2 single blocks: the simulator is slow) on random weights and 6 + 3 tokens.
        using var run = OnRandomWeights("flux-fill-tiny", imageTokens: 6, textTokens: 3, new CountingBackend(IlgpuBackend.CreateCpuSimulator(), profile: true));
        var (recomputed, _) = run.Gradients(recompute: true);
        var (offloaded, _) = run.Gradients(recompute: true, offloadCheckpoints: true);
        ShouldBeTheSame(offloaded, recomputed, "with the boundaries in host memory", "recomputing on the device");
        var profile = ((CountingBackend)run.Backend).Profile;
        // Double block 0's inputs (img_in's and txt_in's), its outputs, and the single blocks' input: five moves each way.
        profile[nameof(ITrainingBackend.MoveToHost)].Calls.ShouldBe(5);
        profile[nameof(ITrainingBackend.MoveToDevice)].Calls.ShouldBe(5);
        var (kept, _) = run.Gradients(recompute: false);
        var (keptOffloaded, _) = run.Gradients(recompute: false, offloadCheckpoints: true);
        ShouldBeTheSame(keptOffloaded, kept, "keeping every activation, boundaries in host memory", "keeping every activation");
    }

    [Fact]
    public void AMovedTensorIsReadOnlyAfterItComesBack()
    {
        using var backend = IlgpuBackend.CreateCpuSimulator();
        using var tensor = backend.Upload(new HostTensor([2, 3], [1, 2, 3, 4, 5, 6]));
        backend.MoveToHost(tensor);
        Should.Throw<InvalidOperationException>(() => backend.Download(tensor, [2, 3])).Message.ShouldContain("in host memory");
        backend.MoveToDevice(tensor);
        backend.Download(tensor, [2, 3]).Data.ShouldBe([1f, 2, 3, 4, 5, 6]);
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
        using var run = OnRandomWeights("flux-mid", imageTokens: 12, textTokens: 5);
        ShouldMatchBitForBit(run);
    }

    /// <summary>A model on seeded random weights and benchmark inputs, diffusers' targets; the CPU backend unless given.</summary>
    private static Run OnRandomWeights(string model, int imageTokens, int textTokens, IBackend? backend = null)
    {
        var info = ModelCatalog.All.Single(m => m.Descriptor.Name == model);
        return new Run(info,
            on => RandomWeights.Upload(info.Descriptor, on, seed: 3),
            (on, _) => BenchInputs.Create(info.Descriptor, batch: 1, imageTokens, textTokens).ToDictionary(p => p.Key, p => on.Upload(p.Value)),
            preset: "diffusers", backend);
    }
}
