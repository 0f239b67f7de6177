using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.WeightFiles;
using Shouldly;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// convert streams: it writes the header from the planned sizes and then each tensor, read and encoded when the writer
/// reaches it. The file is the one the in-memory writers make from every tensor loaded at once, and the process never
/// holds more than about one tensor.
/// </summary>
public class StreamingConvertTests
{
    /// <summary>
    /// The reference is the old way: every tensor of the input read and encoded into memory first (in the formats the
    /// conversion chose, read back from its output), then handed to the writers' in-memory overloads.
    /// </summary>
    [Theory]
    [InlineData("flux-tiny.safetensors", ".gguf", "q4_k")]
    [InlineData("flux-tiny.safetensors", ".gguf", "q3_k")]
    [InlineData("flux-tiny.safetensors", ".gguf", null)]
    [InlineData("flux-tiny.safetensors", ".safetensors", "fp8")]
    [InlineData("flux-tiny.safetensors", ".safetensors", "bf16")]
    [InlineData("q5_k.gguf", ".safetensors", null)]
    [InlineData("q5_k.gguf", ".gguf", "q8_0")]
    public void TheStreamedFileEqualsTheInMemoryWritersFile(string inputName, string extension, string? to)
    {
        using var dir = new TempDir();
        string input = TestPaths.Golden("flux-tiny.safetensors");
        if (inputName.EndsWith(".gguf"))
        {
            input = dir.File(inputName);
            WeightConverter.Convert(TestPaths.Golden("flux-tiny.safetensors"), input, TensorFormat.Q5_K);
        }
        TensorFormat? target = to is null ? null : TensorFormats.TryParseOption(to, out TensorFormat parsed) ? parsed : throw new ArgumentException(to);
        string streamed = dir.File("streamed" + extension), inMemory = dir.File("in-memory" + extension);

        WeightConverter.Convert(input, streamed, target);

        Dictionary<string, TensorFormat> chosen;
        using (IWeightFile written = WeightFile.Open(streamed))
            chosen = written.StoredTensors.ToDictionary(t => t.Name, t => t.Format!.Value);
        using (IWeightFile source = WeightFile.Open(input))
        {
            var loaded = source.StoredTensors.Select(t => chosen[t.Name] == t.Format
                ? new EncodedTensor(t.Name, t.Format.Value, t.Shape, source.GetStoredBytes(t).ToArray())
                : EncodedTensor.Encode(t.Name, source.ReadFloat32(t), chosen[t.Name])).ToList();
            if (extension == ".gguf")
                GgufWriter.Write(inMemory, loaded, source is GgufFile gguf ? gguf.Values : source.Metadata.Select(m => new KeyValuePair<string, object>(m.Key, m.Value)));
            else
                SafeTensorsWriter.WriteEncoded(inMemory, loaded, source.Metadata.Where(m => m.Key != GgmlTypes.AlignmentKey).ToDictionary());
        }
        chosen.Values.ShouldContain(v => target == null || v == target || v.AsDType() != null);
        File.ReadAllBytes(streamed).ShouldBe(File.ReadAllBytes(inMemory));
    }
}

/// <summary>Measures the managed heap while a conversion runs; alone, so no other test's allocations count.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HeapMeasurementCollection
{
    public const string Name = "heap measurement";
}

[Collection(HeapMeasurementCollection.Name)]
public class StreamingConvertMemoryTests(ITestOutputHelper output)
{
    private const int Tensors = 120, Rows = 256, Columns = 1024, BoundInTensors = 10;

    /// <summary>
    /// A file of 120 one-MiB float32 matrices converted to GGUF, keeping F32 (straight from the input's mapping) and
    /// quantizing to Q8_0 (one tensor decoded and encoded at a time): the live managed heap, sampled with full
    /// collections while the conversion runs, never grows by more than 10 tensors' float32 size (the file buffer, one
    /// decoded tensor and its encoding fit in 3; the rest is room for what the runtime and other threads allocate, which
    /// reached 5 MB on a loaded CI machine), where holding every output tensor would take 120 MiB or 32 MiB.
    /// </summary>
    [Theory]
    [InlineData(null)]
    [InlineData(TensorFormat.Q8_0)]
    public void AConversionHoldsAboutOneTensorAtATime(TensorFormat? to)
    {
        using var dir = new TempDir();
        string input = dir.File("many.safetensors");
        var random = new Random(3);
        SafeTensorsWriter.WriteStreamed(input, Enumerable.Range(0, Tensors).Select(t => new StreamedTensor(
            $"layer{t:D2}.weight", TensorFormat.F32, [Rows, Columns], stream =>
            {
                var values = new float[Rows * Columns];
                for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() - 0.5);
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
            })));
        long tensorBytes = (long)Rows * Columns * sizeof(float);

        long baseline = GC.GetTotalMemory(forceFullCollection: true), peak = baseline;
        int samples = 0;
        using var done = new ManualResetEventSlim();
        var sampler = new Thread(() =>
        {
            do
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: true));
                samples++;
            } while (!done.Wait(1));
        });
        sampler.Start();
        var summary = WeightConverter.Convert(input, dir.File("many.gguf"), to);
        done.Set();
        sampler.Join();

        summary.TensorsByFormat[to ?? TensorFormat.F32].ShouldBe(Tensors);
        long grown = peak - baseline;
        output.WriteLine($"{to?.ToString() ?? "F32 kept"}: live heap grew by at most {grown / 1e6:F2} MB over {samples} samples; output {summary.DataBytes / 1e6:F1} MB, one tensor {tensorBytes / 1e6:F2} MB");
        samples.ShouldBeGreaterThanOrEqualTo(2, "the sampler must see the conversion under way");
        grown.ShouldBeLessThan(BoundInTensors * tensorBytes);
    }
}
