using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Tests.Training;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// --offload on the simulator: weights streamed through a device budget far smaller than they are give exactly the
/// results of weights held on the device (the same kernels read the same bytes, only from elsewhere), while the
/// resident bytes never pass the budget and a weight that cannot fit it is refused with the option to change.
/// </summary>
public sealed class SimulatorOffloadTests
{
    private sealed record Run(float[] Output, Dictionary<string, float[]> Gradients,
        long BudgetBytes, long PeakResidentBytes, int OffloadedWeights, long CopyCount, long DeviceWeightBytes, long PeakAllocatedBytes);

    /// <summary>A LoRA + img_in training step of the tiny FLUX (its forward's output and the gradients); one, as the simulator is slow.</summary>
    private static Run TrainingStep(long? budgetBytes)
    {
        using var backend = IlgpuBackend.CreateCpuSimulator();
        if (budgetBytes is long budget)
            backend.EnableWeightOffload(new WeightOffload(budget));
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var weights = WeightLoader.Load(FluxFillTiny.Descriptor.Parameters, [file], backend);
        try
        {
            // One sample of 4 + 3 tokens: the simulator is slow, and the weights are read as often at any size.
            var inputs = BenchInputs.Create(FluxFillTiny.Descriptor, batch: 1, imageTokens: 4, textTokens: 3);
            var (output, gradients) = TinyFluxTrainingStep.Run(backend, weights,
                [("double_blocks.0.img_attn.qkv", 192, 64), ("single_blocks.1.linear2", 64, 320)], inputs);
            var residency = backend.Offload;
            return new Run(output, gradients, residency?.BudgetBytes ?? 0, residency?.PeakResidentBytes ?? 0, residency?.Weights ?? 0,
                residency?.CopyCount ?? 0, weights.Values.Sum(w => w.StoredBytes), backend.PeakAllocatedBytes);
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }

    [Fact]
    public void TinyFluxTrainingStepIsExactWithWeightsStreamedThroughAQuarterOfTheirSize()
    {
        var matrices = FluxFillTiny.Descriptor.Parameters.Where(p => p.Shape.Length >= 2).ToList();
        long matrixBytes = matrices.Sum(p => HostTensor.ElementCount(p.Shape) * sizeof(float));
        long budget = matrixBytes / 4;

        var held = TrainingStep(null);
        var offloaded = TrainingStep(budget);

        offloaded.Output.ShouldBe(held.Output);
        offloaded.Gradients.Keys.ShouldBe(held.Gradients.Keys, ignoreOrder: true);
        foreach (var (name, values) in held.Gradients)
        {
            values.ShouldContain(v => v != 0f, $"{name} got no gradient");
            offloaded.Gradients[name].ShouldBe(values, name);
        }

        offloaded.OffloadedWeights.ShouldBe(matrices.Count);
        offloaded.BudgetBytes.ShouldBe(budget);
        offloaded.PeakResidentBytes.ShouldBeLessThanOrEqualTo(budget);
        // A forward and a backward over the matrices through a quarter of their bytes: most are copied twice, not once.
        offloaded.CopyCount.ShouldBeGreaterThan(3L * matrices.Count / 2);
        // The device holds the vectors and the arena, not the matrices: the backend's count includes the arena.
        offloaded.DeviceWeightBytes.ShouldBe(held.DeviceWeightBytes - matrixBytes);
        offloaded.PeakAllocatedBytes.ShouldBeGreaterThanOrEqualTo(budget);
    }

    [Fact]
    public void StreamedLinearWeightsOfEachStorageTypeGiveTheHeldResultAndStayWithinTheBudget()
    {
        // 32 features: a whole Q8_0 / Q4_0 block per row.
        const int features = 32, rows = 3, count = 6;
        var random = new Random(7);
        var matrices = Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, features * features).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray()).ToList();
        var input = new HostTensor([rows, features], Enumerable.Range(0, rows * features).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray());

        // Float storage as UploadWeight takes it, and quantized blocks as UploadQuantizedWeight keeps them.
        var storages = new (string Name, long MatrixBytes, Func<IlgpuBackend, float[], DeviceTensor> Upload)[]
        {
            ("F32", features * features * 4L, (b, m) => b.UploadWeight([features, features], DType.F32, DTypeEncoding.Encode(m, DType.F32))),
            ("BF16", features * features * 2L, (b, m) => b.UploadWeight([features, features], DType.BF16, DTypeEncoding.Encode(m, DType.BF16))),
            ("F16", features * features * 2L, (b, m) => b.UploadWeight([features, features], DType.F16, DTypeEncoding.Encode(m, DType.F16))),
            ("Q8_0", TensorFormat.Q8_0.ByteCount([features, features])!.Value,
                (b, m) => b.UploadQuantizedWeight([features, features], QuantizationPlan.Quantize(TensorFormat.Q8_0, m))),
            ("Q4_0", TensorFormat.Q4_0.ByteCount([features, features])!.Value,
                (b, m) => b.UploadQuantizedWeight([features, features], QuantizationPlan.Quantize(TensorFormat.Q4_0, m))),
        };
        foreach (var storage in storages)
        {
            List<float[]> Outputs(IlgpuBackend backend)
            {
                var weights = matrices.Select(m => storage.Upload(backend, m)).ToList();
                using var x = backend.Upload(input);
                using var y = backend.Allocate([rows, features]);
                var outputs = new List<float[]>();
                // Two passes in the same order, then backwards: eviction, prefetch by the learned order, and reads against it.
                foreach (var weight in weights.Concat(weights).Concat(Enumerable.Reverse(weights)))
                {
                    backend.Linear(y, x, weight, null);
                    outputs.Add(backend.Download(y, y.Shape).Data);
                    backend.Offload?.ResidentBytes.ShouldBeLessThanOrEqualTo(backend.Offload.BudgetBytes);
                }
                foreach (var weight in weights) weight.Dispose();
                return outputs;
            }
            using var held = IlgpuBackend.CreateCpuSimulator();
            using var streamed = IlgpuBackend.CreateCpuSimulator();
            // Room for three and a half matrices at the arena's 256-byte alignment (three fit): two of them protected as the
            // latest read, one to stream through.
            long slot = (storage.MatrixBytes + 255) / 256 * 256;
            streamed.EnableWeightOffload(new WeightOffload(slot * 7 / 2));
            var expected = Outputs(held);
            var actual = Outputs(streamed);
            for (int i = 0; i < expected.Count; i++)
                actual[i].ShouldBe(expected[i], $"{storage.Name} product {i}");
            streamed.Offload!.CopyCount.ShouldBeGreaterThan(count * 2, $"{storage.Name}: the budget should force re-uploads");
            streamed.Offload.Weights.ShouldBe(0, "disposed weights release their host bytes");
        }
    }

    [Fact]
    public void AWeightLargerThanTheBudgetIsRefusedNamingTheOption()
    {
        using var backend = IlgpuBackend.CreateCpuSimulator();
        backend.EnableWeightOffload(new WeightOffload(4096));
        var error = Should.Throw<ArgumentException>(() => backend.UploadWeight([64, 64], DType.F32, new byte[64 * 64 * sizeof(float)]));
        error.Message.ShouldContain("--gpu-memory-budget");
        error.Message.ShouldContain("F32[64, 64]");
        // Vectors stay on the device whatever their size; they are not the budget's business.
        using var bias = backend.UploadWeight([2048], DType.F32, new byte[2048 * sizeof(float)]);
        bias.StoredBytes.ShouldBe(2048 * sizeof(float));
    }

    [Fact]
    public void OffloadOnTheCpuDeviceIsAnErrorThatSaysWhy()
    {
        var error = Should.Throw<ArgumentException>(() => BackendFactory.Create(DeviceChoice.Cpu, offload: new WeightOffload()));
        error.Message.ShouldContain("--device cpu");
    }
}
