using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Tests.Fill;
using InFluxEdit.Tests.Quantization;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Lora;

/// <summary>
/// LoRA pieces kept unmerged beside a base held in quantized blocks (issue 12): the forward applies them as adapters, so
/// the result is the quantized base plus the exact low-rank change, with no requantization.
/// </summary>
public class UnmergedLoraTests(ITestOutputHelper output)
{
    private static readonly CompiledModelInfo Tiny = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny");
    private static readonly BasePrecision Q8Kept = new(TensorFormat.Q8_0);

    /// <summary>
    /// Pieces that exercise what unmerged adapters must get right: two on one fused qkv (one whole, one on the k row block
    /// only, at its row offset) and whole ones on a single block's fused linear1 and the final layer. Sized so the LoRA
    /// moves the output by several percent.
    /// </summary>
    private static List<LowRankDelta> Pieces(ModelDescriptor model)
    {
        var shapes = model.Parameters.ToDictionary(p => p.Name, p => p.Shape);
        var random = new Random(12);
        LowRankDelta Piece(string module, int rowOffset, int? rows, int rank, float scale)
        {
            int[] weight = shapes[module + ".weight"];
            int pieceRows = rows ?? weight[0];
            var down = new HostTensor(rank, weight[1]);
            var up = new HostTensor(pieceRows, rank);
            for (int i = 0; i < down.Data.Length; i++) down.Data[i] = (float)((2 * random.NextDouble() - 1) / Math.Sqrt(weight[1]));
            for (int i = 0; i < up.Data.Length; i++) up.Data[i] = (float)(2 * random.NextDouble() - 1);
            return new LowRankDelta(module, rowOffset, down, up, scale);
        }
        int qkvRows = shapes["double_blocks.0.img_attn.qkv.weight"][0];
        return
        [
            Piece("double_blocks.0.img_attn.qkv", 0, null, 4, 0.5f),
            Piece("double_blocks.0.img_attn.qkv", qkvRows / 3, qkvRows / 3, 2, 0.75f),
            Piece("single_blocks.1.linear1", 0, null, 3, 0.6f),
            Piece("final_layer.linear", 0, null, 2, 0.4f),
        ];
    }

    /// <summary>Σ scale·up·down of every piece on <paramref name="module"/>, summed in float64, as a [rows, in] array.</summary>
    private static double[] Float64Delta(IEnumerable<LowRankDelta> pieces, string module, int rows, int columns)
    {
        var delta = new double[rows * columns];
        foreach (var piece in pieces.Where(p => p.Module == module))
            for (int r = 0; r < piece.Rows; r++)
                for (int c = 0; c < columns; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < piece.Rank; k++) sum += (double)piece.Up.Data[r * piece.Rank + k] * piece.Down.Data[k * columns + c];
                    delta[(piece.RowOffset + r) * columns + c] += piece.Scale * sum;
                }
        return delta;
    }

    /// <summary>The tiny forward on weights loaded from the golden checkpoint, with <paramref name="change"/> applied to the loaded set (it returns the tensors it replaced).</summary>
    private static float[] Forward(BasePrecision? precision, IReadOnlyDictionary<string, HostTensor>? deltas = null,
        IReadOnlyList<LowRankDelta>? unmerged = null, Func<IBackend, Dictionary<string, DeviceTensor>, IEnumerable<DeviceTensor>>? change = null)
    {
        using var backend = new CpuBackend();
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var weights = new Dictionary<string, DeviceTensor>(
            WeightLoader.Load(Tiny.Descriptor.Parameters, [file], backend, deltas: deltas, ignored: Tiny.Descriptor.Ignores, precision: precision));
        var replaced = change?.Invoke(backend, weights).ToList() ?? [];
        using var adapters = unmerged == null ? null : UnmergedLora.Upload(backend, unmerged, Tiny.Descriptor);
        try
        {
            var model = Tiny.Create(backend, weights);
            model.Training = adapters?.State;
            return QuantizedForwardTests.Run(backend, model);
        }
        finally
        {
            foreach (var w in weights.Values.Concat(replaced)) w.Dispose();
        }
    }

    /// <remarks>
    /// The reference is independent of the adapter path: the same Q8_0 base decoded to float32 (the values its blocks
    /// define, which the kept blocks' products read), with the LoRA's change computed in float64 and added to each weight
    /// before one rounding to float32. Unmerged, the forward computes W·x + s·(x·Aᵀ)·Bᵀ instead of (W + ΔW)·x: the same
    /// sum in another order, so the two differ by float32 rounding only — a few ε (6e-8) per product, relative, through the
    /// dozen layers of the tiny model; 1e-5 leaves that an order of magnitude of room while the LoRA itself moves the output
    /// by several percent. The old path (merged, then quantized again) is measured beside it: its error is the LoRA's change
    /// rounded to Q8_0.
    /// </remarks>
    [Fact]
    public void AnUnmergedLoraOverAQ80BaseEqualsTheBasePlusItsExactChange()
    {
        var pieces = Pieces(Tiny.Descriptor);
        var modules = pieces.Select(p => p.Module).Distinct().ToList();
        var decodedQ8 = Q8Kept with { DecodeAtLoad = true };

        float[] unmerged = Forward(Q8Kept, unmerged: pieces);
        float[] baseOnly = Forward(Q8Kept);
        float[] reference = Forward(decodedQ8, change: (backend, weights) =>
        {
            var old = new List<DeviceTensor>();
            foreach (string module in modules)
            {
                string key = module + ".weight";
                var weight = weights[key];
                var host = backend.Download(weight, weight.Shape);
                double[] delta = Float64Delta(pieces, module, host.Shape[0], host.Shape[1]);
                for (int i = 0; i < host.Data.Length; i++) host.Data[i] = (float)(host.Data[i] + delta[i]);
                old.Add(weight);
                weights[key] = backend.Upload(host);
            }
            return old;
        });
        var content = new LoraContent();
        content.LowRank.AddRange(pieces);
        float[] requantized = Forward(Q8Kept, deltas: content.ToDeltas(Tiny.Descriptor));

        double error = TensorComparison.RelativeL2(unmerged, reference);
        double effect = TensorComparison.RelativeL2(baseOnly, reference);
        double requantizedError = TensorComparison.RelativeL2(requantized, reference);
        output.WriteLine($"rel L2 vs float64-delta reference: unmerged {error:E2}, merged and requantized to Q8_0 {requantizedError:E2}; the LoRA's effect {effect:E2}");
        effect.ShouldBeGreaterThan(1e-2, "the LoRA must move the output, or the comparison proves nothing");
        error.ShouldBeLessThan(1e-5);
        requantizedError.ShouldBeGreaterThan(10 * error, "requantizing the merged weight loses what the unmerged adapters keep");
    }

    /// <remarks>
    /// Through the whole edit command: golden checkpoint, --base-precision q8_0, the LoRA as a kohya file (whole pieces)
    /// and a diffusers file (the k rows of the fused qkv), against editing a float32 checkpoint that holds the decoded Q8_0
    /// base plus the LoRA's change summed in float64. One level of the 8-bit image is allowed: float32 sums in another
    /// order can cross a rounding boundary.
    /// </remarks>
    [Fact]
    public void EditWithALoraOverAQ80BaseGivesTheImageOfTheBasePlusTheExactChange()
    {
        FillGolden.RequireCompiledVae();
        using var dir = new TempDir();
        var pieces = Pieces(Tiny.Descriptor);
        var whole = new LoraContent();
        whole.LowRank.AddRange(pieces.Where(p => p.RowOffset == 0));
        LoraWriter.Write(dir.File("kohya.safetensors"), whole, Tiny.Descriptor, LoraFormat.Kohya, new Dictionary<string, string>(), DType.F32);
        var k = pieces.Single(p => p.RowOffset != 0);
        var scaledUp = new HostTensor(k.Up.Shape, k.Up.Data.Select(v => v * k.Scale).ToArray());
        SafeTensorsWriter.Write(dir.File("peft.safetensors"), new Dictionary<string, HostTensor>
        {
            ["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"] = k.Down,
            ["transformer.transformer_blocks.0.attn.to_k.lora_B.weight"] = scaledUp,
        });

        // The reference checkpoint: every weight as Q8_0 defines it, decoded, plus the float64 change.
        var decoded = new Dictionary<string, HostTensor>();
        using (var backend = new CpuBackend())
        using (var goldenFile = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors")))
        {
            var weights = WeightLoader.Load(Tiny.Descriptor.Parameters, [goldenFile], backend, ignored: Tiny.Descriptor.Ignores,
                precision: Q8Kept with { DecodeAtLoad = true });
            foreach (var (key, weight) in weights)
            {
                decoded[key] = backend.Download(weight, weight.Shape);
                weight.Dispose();
            }
        }
        foreach (string module in pieces.Select(p => p.Module).Distinct())
        {
            var weight = decoded[module + ".weight"];
            double[] delta = Float64Delta(pieces, module, weight.Shape[0], weight.Shape[1]);
            for (int i = 0; i < weight.Data.Length; i++) weight.Data[i] = (float)(weight.Data[i] + delta[i]);
        }
        SafeTensorsWriter.Write(dir.File("reference.safetensors"), decoded);

        (byte[] Pixels, string Log) Edit(string weights, string? precision, params string[] loras)
        {
            var options = new EditOptions
            {
                Weights = weights, Vae = TestPaths.Golden("vae-tiny.safetensors"), Input = TestPaths.Golden("fill-tiny-image.png"),
                Method = EditMethod.Channel, TextEmbeddings = FillGolden.WriteTextEmbeddings(dir), Steps = 2, Seed = 1,
                Output = dir.File($"out{Guid.NewGuid():N}.png"), Device = "cpu", BasePrecision = precision, Loras = loras,
            };
            var log = new StringWriter();
            EditCommand.Run(options, log, ModelCatalog.All).ShouldBe(0, log.ToString());
            using var image = Image.Load<Rgb24>(options.Output);
            var pixels = new byte[image.Width * image.Height * 3];
            image.CopyPixelDataTo(pixels);
            return (pixels, log.ToString());
        }
        string golden = TestPaths.Golden("flux-tiny.safetensors");
        var (unmerged, log) = Edit(golden, "q8_0", dir.File("kohya.safetensors"), dir.File("peft.safetensors"));
        var (reference, _) = Edit(dir.File("reference.safetensors"), null);
        var (baseOnly, _) = Edit(golden, "q8_0");

        // final_layer's piece merges: that layer is one of the schema's unquantized ones, float under q8_0.
        int onQuantized = pieces.Count(p => !Tiny.Descriptor.Parameters.Single(w => w.Name == p.Module + ".weight").Unquantized);
        onQuantized.ShouldBeLessThan(pieces.Count);
        log.ShouldContain($"lora: {onQuantized} low-rank pieces kept unmerged beside the q8_0 base (no requantization)");
        unmerged.Zip(reference, (a, b) => Math.Abs(a - b)).Max().ShouldBeLessThanOrEqualTo(1);
        baseOnly.Zip(reference, (a, b) => Math.Abs(a - b)).Max().ShouldBeGreaterThan(1, "the LoRA must change the edit");
    }

    [Fact]
    public void AnAdapterOnALayerNoPassAppliesIsAnError()
    {
        var clip = ModelCatalog.All.Single(m => m.Descriptor.Name == "clip-tiny").Descriptor;
        clip.AdapterModules.ShouldBeEmpty();
        var linear = clip.Parameters.First(p => p.Shape.Length == 2 && p.Name.EndsWith(".weight", StringComparison.Ordinal));
        var piece = new LowRankDelta(linear.Name[..^".weight".Length], 0, new HostTensor(1, linear.Shape[1]), new HostTensor(linear.Shape[0], 1), 1f);
        using var backend = new CpuBackend();
        var error = Should.Throw<ArgumentException>(() => UnmergedLora.Upload(backend, [piece], clip));
        error.Message.ShouldContain($"'{piece.Module}'");
        error.Message.ShouldContain("applies no adapters");
    }

    [Fact]
    public void AnAppliedAdapterRefusesToTrain()
    {
        using var backend = new CpuBackend();
        using var a = backend.Upload(new HostTensor(1, 4));
        using var b = backend.Upload(new HostTensor(4, 1));
        var adapter = LoraAdapter.Applied(a, b, 1f, 0);
        Should.Throw<InvalidOperationException>(() => adapter.GradA).Message.ShouldContain("no gradients");
    }

    /// <summary>
    /// How edit splits LoRA files: over a float base (no quantized matrices) everything merges exactly as before, the
    /// same deltas bit for bit; over quantized matrices the low-rank pieces stay apart and the log says so.
    /// </summary>
    [Fact]
    public void EditMergesOverAFloatBaseAndKeepsPiecesApartOverAQuantizedOne()
    {
        using var dir = new TempDir();
        var pieces = Pieces(Tiny.Descriptor).Where(p => p.RowOffset == 0).ToList();
        var files = new List<LoraFile>();
        for (int f = 0; f < 2; f++)
        {
            var content = new LoraContent();
            content.LowRank.AddRange(pieces.Where((_, i) => i % 2 == f));
            string path = dir.File($"lora{f}.safetensors");
            LoraWriter.Write(path, content, Tiny.Descriptor, LoraFormat.Kohya, new Dictionary<string, string>(), DType.F32);
            files.Add(new LoraFile(path, f == 0 ? 1f : 0.5f));
        }

        var log = new StringWriter();
        var merged = LoraMerge.Read(files, Tiny.Descriptor, log)!;
        var overFloat = LoraMerge.Split(files, Tiny.Descriptor, log, false, null, new HashSet<string>(), "");
        overFloat.Unmerged.ShouldBeEmpty();
        overFloat.Merged!.Keys.Order().ShouldBe(merged.Keys.Order());
        foreach (var (key, delta) in merged) overFloat.Merged[key].Data.ShouldBe(delta.Data);
        log.ToString().ShouldNotContain("unmerged");

        using var checkpoint = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        var quantized = WeightLoader.QuantizedMatrices(Tiny.Descriptor.Parameters, [checkpoint], Q8Kept);
        var overQ8 = LoraMerge.Split(files, Tiny.Descriptor, log, false, null, quantized, Q8Kept.ToString());
        // final_layer is one of the schema's unquantized layers: float under q8_0, so its piece merges like over a float base.
        var onQuantized = pieces.Where(p => quantized.Contains(p.Module + ".weight")).ToList();
        var onFloat = pieces.Except(onQuantized).Select(p => p.Module + ".weight").Distinct().ToList();
        onFloat.ShouldBe(["final_layer.linear.weight"]);
        overQ8.Merged!.Keys.ShouldBe(onFloat);
        foreach (string key in onFloat) overQ8.Merged[key].Data.ShouldBe(merged[key].Data);
        overQ8.Unmerged.Count.ShouldBe(onQuantized.Count);
        var kept = new LoraContent();
        kept.LowRank.AddRange(overQ8.Unmerged);
        foreach (var (key, delta) in kept.ToDeltas(Tiny.Descriptor)) delta.Data.ShouldBe(merged[key].Data, "the kept pieces carry each file's scale");
        log.ToString().ShouldContain($"lora: {onQuantized.Count} low-rank pieces kept unmerged beside the q8_0 base (no requantization)");
    }

    /// <summary>
    /// A LoRA kept unmerged does not push a bf16 forward back to float32 activations: on the simulator in bf16 precision
    /// the model's output is stored bf16 and carries the LoRA's change within bf16's error of the CPU's float32 forward.
    /// </summary>
    [Fact]
    public void AnUnmergedLoraRunsOverBFloat16Activations()
    {
        var pieces = Pieces(Tiny.Descriptor);
        (float[] Values, DType Stored) Run(IBackend backend, bool withLora)
        {
            using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
            var weights = WeightLoader.Load(Tiny.Descriptor.Parameters, [file], backend, ignored: Tiny.Descriptor.Ignores);
            using var adapters = withLora ? UnmergedLora.Upload(backend, pieces, Tiny.Descriptor) : null;
            using var data = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-forward.safetensors"));
            var model = Tiny.Create(backend, weights);
            model.Training = adapters?.State;
            var inputs = model.InputNames.ToDictionary(n => n, n => backend.Upload(data.ReadFloat32(n)));
            try
            {
                using var result = model.Run(inputs).Values.Single();
                return (backend.Download(result, result.Shape).Data, result.DType);
            }
            finally
            {
                foreach (var t in inputs.Values.Concat(weights.Values)) t.Dispose();
            }
        }
        using var cpu = new CpuBackend();
        var reference = Run(cpu, withLora: true);
        var baseOnly = Run(cpu, withLora: false);
        using var simulator = IlgpuBackend.CreateCpuSimulator(GpuPrecision.BFloat16);
        var narrow = Run(simulator, withLora: true);
        narrow.Stored.ShouldBe(DType.BF16);
        double error = TensorComparison.RelativeL2(narrow.Values, reference.Values);
        double change = TensorComparison.RelativeL2(baseOnly.Values, reference.Values);
        output.WriteLine($"bf16 activations with the LoRA unmerged: rel L2 {error:E2} against float32; the LoRA's own change {change:E2}");
        error.ShouldBeLessThan(1e-2);
        change.ShouldBeGreaterThan(5 * error, "the LoRA's change must stand well above bf16's error, or this shows nothing");
    }
}
