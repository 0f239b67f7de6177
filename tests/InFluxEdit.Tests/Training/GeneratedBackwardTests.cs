using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// The generated backward pass of the whole tiny FLUX model against central finite differences of its own forward:
/// adapters on a double block's qkv and a single block's linear2, plus img_in trained whole.
/// </summary>
public class GeneratedBackwardTests
{
    private sealed class Setup : IDisposable
    {
        public readonly CpuBackend Backend = new();
        public readonly FluxFillTiny Model;
        public readonly Dictionary<string, DeviceTensor> Inputs;
        public readonly HostTensor Weights;
        private readonly IReadOnlyDictionary<string, DeviceTensor> _weights;

        public Setup()
        {
            using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
            _weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, new[] { file }, Backend);
            Model = new FluxFillTiny(Backend, _weights);
            using var data = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
            Inputs = Model.InputNames.ToDictionary(n => n, n => Backend.Upload(data.ReadFloat32(n)));
            var random = new Random(9);
            Weights = new HostTensor(Backend.Download(Inputs["img"], Inputs["img"].Shape).Shape);
            for (int i = 0; i < Weights.Data.Length; i++) Weights.Data[i] = (float)(random.NextDouble() - 0.5);
            var state = new TrainingState();
            foreach (var (module, rows, columns) in new[] { ("double_blocks.0.img_attn.qkv", 192, 64), ("single_blocks.1.linear2", 64, 320) })
            {
                var a = Random(random, 4, columns);
                var b = Random(random, rows, 4);
                state.Add(module, new LoraAdapter(Backend.Upload(a), Backend.Upload(b), 2f,
                    Backend.Upload(new HostTensor(4, columns)), Backend.Upload(new HostTensor(rows, 4))));
            }
            // A diffusers-style adapter on one row block of a fused layer: k of a double block's text qkv.
            state.Add("double_blocks.1.txt_attn.qkv", new LoraAdapter(Backend.Upload(Random(random, 4, 64)), Backend.Upload(Random(random, 64, 4)), 1.5f,
                Backend.Upload(new HostTensor(4, 64)), Backend.Upload(new HostTensor(64, 4)), rowOffset: 64));
            state.WeightGradients["img_in.weight"] = Backend.Upload(new HostTensor(64, 384));
            state.WeightGradients["img_in.bias"] = Backend.Upload(new HostTensor(64));
            Model.Training = state;
        }

        private static HostTensor Random(Random random, params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() - 0.5) * 0.5f;
            return t;
        }

        /// <summary>loss = Σ w ⊙ out (the output's gradient is w), in float64.</summary>
        public double Loss()
        {
            var output = Model.Run(Inputs)["out"];
            var host = Backend.Download(output, output.Shape);
            output.Dispose();
            double sum = 0;
            for (int i = 0; i < host.Data.Length; i++) sum += (double)host.Data[i] * Weights.Data[i % Weights.Data.Length];
            return sum;
        }

        public void Gradients()
        {
            Model.ForwardBackward(Inputs, output =>
            {
                var w = new HostTensor(output.Shape);
                for (int i = 0; i < w.Data.Length; i++) w.Data[i] = Weights.Data[i % Weights.Data.Length];
                return Backend.Upload(w);
            });
        }

        public void Dispose()
        {
            foreach (var t in Inputs.Values.Concat(_weights.Values)) t.Dispose();
            Backend.Dispose();
        }
    }

    /// <summary>Central differences on a few entries of a parameter, compared with the backward pass's gradient.</summary>
    private static void CheckEntries(Setup s, DeviceTensor parameter, DeviceTensor gradient, params int[] entries)
    {
        var analytic = s.Backend.Download(gradient, gradient.Shape);
        var values = s.Backend.Download(parameter, parameter.Shape);
        foreach (int i in entries)
        {
            // The forward runs in float32: a step of 1e-2 keeps rounding noise well below the change it measures.
            const float Step = 1e-2f;
            float original = values.Data[i];
            values.Data[i] = original + Step;
            Overwrite(s.Backend, parameter, values);
            double plus = s.Loss();
            values.Data[i] = original - Step;
            Overwrite(s.Backend, parameter, values);
            double minus = s.Loss();
            values.Data[i] = original;
            Overwrite(s.Backend, parameter, values);
            double numeric = (plus - minus) / (2 * Step);
            Math.Abs(analytic.Data[i] - numeric).ShouldBeLessThan(2e-3 + 2e-2 * Math.Abs(numeric), $"entry {i}: backward {analytic.Data[i]}, finite differences {numeric}");
        }
    }

    private static void Overwrite(CpuBackend backend, DeviceTensor target, HostTensor values)
    {
        using var source = backend.Upload(values);
        backend.Copy(target, source);
    }

    [Fact]
    public void AdapterAndWholeWeightGradientsMatchFiniteDifferences()
    {
        using var s = new Setup();
        s.Gradients();
        var training = s.Model.Training!;
        var qkv = training.Adapters["double_blocks.0.img_attn.qkv"][0];
        var linear2 = training.Adapters["single_blocks.1.linear2"][0];
        CheckEntries(s, qkv.A, qkv.GradA, 0, 77, 200);
        CheckEntries(s, qkv.B, qkv.GradB, 3, 400, 700);
        CheckEntries(s, linear2.A, linear2.GradA, 5, 640, 1279);
        CheckEntries(s, linear2.B, linear2.GradB, 1, 130);
        var keyRows = training.Adapters["double_blocks.1.txt_attn.qkv"][0];
        CheckEntries(s, keyRows.A, keyRows.GradA, 2, 100);
        CheckEntries(s, keyRows.B, keyRows.GradB, 7, 250);
        // img_in is a model weight: the loader's tensor, found through the descriptor's key.
        var imgIn = s.Model.GetType().GetField("_imgInWeight", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .GetValue(s.Model) as DeviceTensor;
        CheckEntries(s, imgIn!, training.WeightGradients["img_in.weight"], 0, 1000, 24575);
    }

    [Fact]
    public void GradientsAccumulateAcrossPasses()
    {
        using var s = new Setup();
        s.Gradients();
        var once = s.Backend.Download(s.Model.Training!.Adapters["double_blocks.0.img_attn.qkv"][0].GradA, new[] { 4, 64 });
        s.Gradients();
        var twice = s.Backend.Download(s.Model.Training!.Adapters["double_blocks.0.img_attn.qkv"][0].GradA, new[] { 4, 64 });
        for (int i = 0; i < once.Data.Length; i++) twice.Data[i].ShouldBe(2 * once.Data[i], Math.Abs(once.Data[i]) * 1e-5 + 1e-9);
    }

    [Fact]
    public void ModelsWithoutTrainableLayersSaySo()
    {
        using var backend = new CpuBackend();
        using var file = SafeTensorsFile.Open(TestPaths.Golden("clip-tiny.safetensors"));
        var info = ModelCatalog.All.First(m => m.Descriptor.Name == "clip-tiny");
        var weights = WeightLoader.Load(info.Descriptor.Parameters, new[] { file }, backend);
        var encoder = info.Create(backend, weights);
        Should.Throw<NotSupportedException>(() => encoder.ForwardBackward(new Dictionary<string, DeviceTensor>(), t => t))
            .Message.ShouldContain("has no training pass");
        foreach (var w in weights.Values) w.Dispose();
    }
}

public class ZeroTests
{
    [Fact]
    public void ZeroClearsNaNInsideTheViewOnly()
    {
        using var backend = new CpuBackend();
        var host = new HostTensor(3, 5);
        Array.Fill(host.Data, float.NaN);
        using var tensor = backend.Upload(host);
        backend.Zero(tensor.AsView().Columns(1, 3));
        var after = backend.Download(tensor, tensor.Shape);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 5; c++)
                if (c is >= 1 and <= 3) after.Data[r * 5 + c].ShouldBe(0f);
                else float.IsNaN(after.Data[r * 5 + c]).ShouldBeTrue();
    }
}
