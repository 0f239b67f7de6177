using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.WeightFiles;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// ComfyUI's scaled fp8 checkpoints, written here byte by byte: a weight's value is its fp8 value times its
/// <c>scale_weight</c> in float32 (comfy/ops.py), whatever the scale; broken scale bookkeeping is one clear error.
/// </summary>
public class ScaledFp8Tests
{
    // Deliberately not a power of two: the product with it rounds.
    private const float Scale = 0.0123456789f;

    /// <summary>E4M3 (fn) from its bits, by the format's definition: bias 7, three mantissa bits, subnormals below 2^-6.</summary>
    private static float E4M3(byte code)
    {
        int sign = code >> 7, exponent = (code >> 3) & 15, mantissa = code & 7;
        double magnitude = exponent == 0 ? mantissa / 8.0 * Math.Pow(2, -6) : (1 + mantissa / 8.0) * Math.Pow(2, exponent - 7);
        return (float)(sign == 1 ? -magnitude : magnitude);
    }

    /// <summary>Every finite E4M3 code but the two NaNs, as a [3, 84] weight.</summary>
    private static byte[] Codes() => Enumerable.Range(0, 256).Where(c => (c & 0x7F) != 0x7F).Select(c => (byte)c).Take(252).ToArray();

    private static EncodedTensor Scalar(string name, float value, int[]? shape = null) =>
        new(name, TensorFormat.F32, shape ?? [], BitConverter.GetBytes(value));

    private static string Write(TempDir dir, params EncodedTensor[] tensors)
    {
        string path = dir.File("scaled.safetensors");
        SafeTensorsWriter.WriteEncoded(path, tensors);
        return path;
    }

    private static EncodedTensor[] AScaledCheckpoint() =>
    [
        new(ScaledFp8.Marker, TensorFormat.F8_E4M3, [0], Array.Empty<byte>()),
        new("blk.weight", TensorFormat.F8_E4M3, [3, 84], Codes()),
        Scalar("blk.scale_weight", Scale),
        Scalar("blk.scale_input", 3.5f, [1]),
        new("blk.bias", TensorFormat.F32, [3], new byte[12]),
        new("plain.weight", TensorFormat.F8_E4M3, [2, 2], new byte[] { 0x38, 0x40, 0xB8, 0x01 }),
    ];

    [Fact]
    public void AWeightIsItsFp8ValueTimesItsScaleInFloat32()
    {
        using var dir = new TempDir();
        using var file = SafeTensorsFile.Open(Write(dir, AScaledCheckpoint()));
        float[] expected = Codes().Select(c => E4M3(c) * Scale).ToArray();

        StoredTensor weight = file.Find("blk.weight");
        weight.Scale.ShouldBe(Scale);
        float[] read = file.ReadFloat32(weight).Data;
        read.Select(BitConverter.SingleToInt32Bits).ShouldBe(expected.Select(BitConverter.SingleToInt32Bits));
        file.ReadFloat32("blk.weight").Data.ShouldBe(read);
        read.Zip(Codes(), (v, c) => v != E4M3(c) * (double)Scale).ShouldContain(true, "the scale is not a power of two, so some products round");

        file.Find("plain.weight").Scale.ShouldBe(1f, "a weight without a scale_weight is its fp8 values");
        file.ReadFloat32(file.Find("plain.weight")).Data.ShouldBe([1f, 2f, -1f, E4M3(0x01)]);
        file.StoredTensors.Where(t => t.IsScaleMetadata).Select(t => t.Name)
            .ShouldBe([ScaledFp8.Marker, "blk.scale_weight", "blk.scale_input"], ignoreOrder: true);
    }

    [Fact]
    public void WeightsHeldQuantizedCarryTheScale()
    {
        using var dir = new TempDir();
        using var file = SafeTensorsFile.Open(Write(dir, AScaledCheckpoint()));
        StoredTensor weight = file.Find("blk.weight");
        var blocks = new QuantizedBlocks(weight.Format!.Value, file.GetStoredBytes(weight).ToArray(), weight.Scale, weight.ElementCount);
        blocks.Decode().ShouldBe(file.ReadFloat32(weight).Data);
    }

    public static TheoryData<string, string> BadFiles() => new()
    {
        { "marker without scales", "no '*.scale_weight'" },
        { "scale of two values", "'blk.scale_weight' is F32[2]" },
        { "fp8 scale", "'blk.scale_weight' is F8_E4M3[]" },
        { "scale of a missing weight", "'ghost.scale_weight' scales 'ghost.weight', which the file does not have" },
        { "negative scale", "'blk.scale_weight' is -0.5" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void BrokenScaleBookkeepingIsOneClearError(string problem, string message)
    {
        using var dir = new TempDir();
        EncodedTensor marker = new(ScaledFp8.Marker, TensorFormat.F8_E4M3, [0], Array.Empty<byte>());
        EncodedTensor weight = new("blk.weight", TensorFormat.F8_E4M3, [3, 84], Codes());
        EncodedTensor[] tensors = problem switch
        {
            "marker without scales" => [marker, weight],
            "scale of two values" => [marker, weight, new("blk.scale_weight", TensorFormat.F32, [2], new byte[8])],
            "fp8 scale" => [marker, weight, new("blk.scale_weight", TensorFormat.F8_E4M3, [], new byte[] { 0x38 })],
            "scale of a missing weight" => [marker, weight, Scalar("blk.scale_weight", Scale), Scalar("ghost.scale_weight", Scale)],
            "negative scale" => [marker, weight, Scalar("blk.scale_weight", -0.5f)],
            _ => throw new ArgumentException(problem),
        };
        string path = Write(dir, tensors);
        var error = Should.Throw<SafeTensorsException>(() => SafeTensorsFile.Open(path).Dispose());
        error.Message.ShouldContain(message);
        error.Message.ShouldContain(path);
        error.Message.ShouldNotContain("\n");
    }

    [Fact]
    public void ConvertKeepsTheScalesBesideFp8BytesAndAppliesThemWhenDecoding()
    {
        using var dir = new TempDir();
        string input = Write(dir, AScaledCheckpoint());
        float[] values;
        using (var file = SafeTensorsFile.Open(input)) values = file.ReadFloat32(file.Find("blk.weight")).Data;

        string copy = dir.File("copy.safetensors");
        WeightConverter.Convert(input, copy, to: null);
        using (var file = SafeTensorsFile.Open(copy))
        {
            file.StoredTensors.Select(t => t.Name).ShouldBe(AScaledCheckpoint().Select(t => t.Name), ignoreOrder: true);
            file.ReadFloat32(file.Find("blk.weight")).Data.ShouldBe(values);
        }

        string gguf = dir.File("decoded.gguf");
        var summary = WeightConverter.Convert(input, gguf, to: null);
        summary.Skipped.Count(s => s.Contains("scaled fp8")).ShouldBe(3);
        using (var file = WeightFile.Open(gguf))
        {
            file.StoredTensors.Select(t => t.Name).ShouldBe(["blk.weight", "blk.bias", "plain.weight"], ignoreOrder: true);
            file.Find("blk.weight").Format.ShouldBe(TensorFormat.F32);
            file.ReadFloat32(file.Find("blk.weight")).Data.ShouldBe(values);
        }
    }
}
