using System.Text;
using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.WeightFiles;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>Every kind of broken GGUF or fp8 safetensors file fails at open with one clear message, never a crash or a huge allocation.</summary>
public class BadFileTests
{
    private static IndependentGgml.GgufBuilder Valid() => new IndependentGgml.GgufBuilder()
        .KvString("general.architecture", "flux")
        .Tensor("a.weight", [32, 2], 8, new byte[2 * 34])
        .Tensor("b.weight", [256], 12, new byte[144]);

    private static string OpenFails(byte[] bytes)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.gguf");
        File.WriteAllBytes(path, bytes);
        var error = Should.Throw<GgufException>(() => WeightFile.Open(path).Dispose());
        error.Message.ShouldStartWith($"Cannot read GGUF file '{path}'");
        error.Message.ShouldNotContain("\n");
        return error.Message;
    }

    private static byte[] Patch(byte[] bytes, int at, params byte[] with)
    {
        var copy = (byte[])bytes.Clone();
        with.CopyTo(copy, at);
        return copy;
    }

    [Fact]
    public void TheValidFileOpens()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("good.gguf"), Valid().Build());
        using var file = WeightFile.Open(dir.File("good.gguf"));
        file.StoredTensors.Select(t => t.ToString()).ShouldBe(["a.weight: Q8_0[2, 32]", "b.weight: Q4_K[256]"]);
    }

    [Fact]
    public void TruncatedFilesSayTheyAreCutOff()
    {
        byte[] bytes = Valid().Build();
        foreach (int length in new[] { 6, 20, 40, 70, bytes.Length - 144 - 1, bytes.Length - 1 })
            OpenFails(bytes[..length]).ShouldContain("truncated");
    }

    [Fact]
    public void WrongMagicOrVersionIsNamed()
    {
        byte[] bytes = Valid().Build();
        OpenFails(Patch(bytes, 0, "GGML"u8.ToArray())).ShouldContain("magic");
        OpenFails(Patch(bytes, 4, BitConverter.GetBytes(2u))).ShouldContain("version 2");
        OpenFails(Patch(bytes, 4, BitConverter.GetBytes(4u))).ShouldContain("version 4");
    }

    [Fact]
    public void UnknownTensorTypesAreNamed()
    {
        var builder = new IndependentGgml.GgufBuilder().Tensor("x.weight", [256], 23, new byte[136]);
        OpenFails(builder.Build()).ShouldContain("'x.weight' is stored as IQ4_XS");
        OpenFails(new IndependentGgml.GgufBuilder().Tensor("y", [4], 77, new byte[4]).Build()).ShouldContain("unknown type 77");
    }

    [Fact]
    public void ShapesThatAreNotWholeBlocksAreRejected()
    {
        var builder = new IndependentGgml.GgufBuilder().Tensor("x.weight", [48, 2], 8, new byte[128]);
        OpenFails(builder.Build()).ShouldContain("innermost dimension 48 is not a whole number of 32-element blocks");
        // Found by the gguf fuzz target: a block format with no dimensions at all once indexed the missing innermost one.
        OpenFails(new IndependentGgml.GgufBuilder().Tensor("s", [], 8, new byte[34]).Build()).ShouldContain("tensor 's' is a Q8_0 scalar");
    }

    [Fact]
    public void OffsetsPastTheEndMisalignedOrOverlappingAreRejected()
    {
        byte[] bytes = Valid().Build();
        // b.weight's info: its name, 1 dimension (uint32 count + uint64), the type, then the offset field.
        int offsetField = bytes.AsSpan().IndexOf("b.weight"u8) + 8 + 4 + 8 + 4;
        OpenFails(Patch(bytes, offsetField, BitConverter.GetBytes(1UL << 20))).ShouldContain("ends past the");
        OpenFails(Patch(bytes, offsetField, BitConverter.GetBytes(ulong.MaxValue - 31))).ShouldContain("ends past the");
        OpenFails(WithOffsets((t, o) => t == 1 ? 96 + 8 : o)).ShouldContain("not a multiple of the file's alignment 32");
        OpenFails(WithOffsets((t, o) => 0)).ShouldContain("overlap");
    }

    private static byte[] WithOffsets(Func<int, long, long> offsets)
    {
        var builder = Valid();
        builder.OffsetOverride = offsets;
        return builder.Build();
    }

    [Fact]
    public void AbsurdLengthsAndCountsAreRejectedBeforeAllocating()
    {
        // A metadata string, an array and the counts claiming far more than the file holds.
        byte[] hugeString = new IndependentGgml.GgufBuilder().Kv("s", 8, BitConverter.GetBytes(1UL << 60)).Build();
        OpenFails(hugeString).ShouldContain("claims to be 1152921504606846976 bytes long");
        byte[] hugeArray = new IndependentGgml.GgufBuilder().Kv("a", 9, [.. BitConverter.GetBytes(4u), .. BitConverter.GetBytes(1UL << 61)]).Build();
        OpenFails(hugeArray).ShouldContain("metadata array 'a' claims 2305843009213693952 elements");
        byte[] bytes = Valid().Build();
        OpenFails(Patch(bytes, 8, BitConverter.GetBytes(1UL << 40))).ShouldContain("tensor infos");
        OpenFails(Patch(bytes, 16, BitConverter.GetBytes(ulong.MaxValue))).ShouldContain("metadata key/values");
        byte[] hugeKey = Patch(bytes, 24, BitConverter.GetBytes(long.MaxValue));
        OpenFails(hugeKey).ShouldContain("a metadata key claims");
    }

    [Fact]
    public void MalformedMetadataAndTensorInfosAreNamed()
    {
        OpenFails(new IndependentGgml.GgufBuilder().Kv("k", 13, [0]).Build()).ShouldContain("value type 13");
        OpenFails(new IndependentGgml.GgufBuilder().Kv("k", 7, [2]).Build()).ShouldContain("bool stored as 2");
        OpenFails(new IndependentGgml.GgufBuilder().Kv("k", 8, [.. BitConverter.GetBytes(2UL), 0xC3, 0x28]).Build()).ShouldContain("not valid UTF-8");
        OpenFails(new IndependentGgml.GgufBuilder().KvString("k", "a").KvString("k", "b").Build()).ShouldContain("'k' appears twice");
        OpenFails(new IndependentGgml.GgufBuilder().Kv("general.alignment", 4, BitConverter.GetBytes(48u)).Build()).ShouldContain("power of two");
        OpenFails(new IndependentGgml.GgufBuilder().Kv("k", 9, NestedArrays(10_000)).Build()).ShouldContain("nests arrays more than 8 deep");
        using (var dir = new TempDir())
        {
            File.WriteAllBytes(dir.File("nested.gguf"), new IndependentGgml.GgufBuilder().Kv("k", 9, NestedArrays(8)).Build());
            using var nested = GgufFile.Open(dir.File("nested.gguf"));
            nested.Values["k"].ShouldBeOfType<object[]>().ShouldHaveSingleItem().ShouldBeOfType<object[]>();
        }
        OpenFails(new IndependentGgml.GgufBuilder().Tensor("t", [1, 1, 1, 1, 1], 0, new byte[4]).Build()).ShouldContain("5 dimensions");
        OpenFails(new IndependentGgml.GgufBuilder().Tensor("t", [4], 0, new byte[16]).Tensor("t", [4], 0, new byte[16]).Build())
            .ShouldContain("two tensors are named 't'");
    }

    /// <summary>An array of one array of one array … <paramref name="depth"/> levels deep, the innermost an empty uint8 array.</summary>
    private static byte[] NestedArrays(int depth)
    {
        var payload = new List<byte>();
        for (int level = 1; level < depth; level++) payload.AddRange([.. BitConverter.GetBytes(9u), .. BitConverter.GetBytes(1UL)]);
        payload.AddRange([.. BitConverter.GetBytes(0u), .. BitConverter.GetBytes(0UL)]);
        return [.. payload];
    }

    private static byte[] SafeTensors(string header, int dataBytes)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        return [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. new byte[dataBytes]];
    }

    [Fact]
    public void Fp8SafetensorsDecodeAndLoadBesideBf16Tensors()
    {
        using var dir = new TempDir();
        string path = dir.File("fp8.safetensors");
        // Written by hand: weight E4M3 [2, 3] at 0..6, E5M2 [3] at 6..9, bias BF16 [2] at 9..13.
        byte[] bytes = SafeTensors("""{"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,6]},"v":{"dtype":"F8_E5M2","shape":[3],"data_offsets":[6,9]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[9,13]}}""", 13);
        int data = bytes.Length - 13;
        new byte[] { 0x38, 0xB8, 0x7E, 0x01, 0x00, 0x7F, 0x3C, 0x7C, 0x01, 0x80, 0x3F, 0x00, 0xC0 }.CopyTo(bytes, data);
        File.WriteAllBytes(path, bytes);

        using var file = SafeTensorsFile.Open(path);
        float[] w = file.ReadFloat32("w").Data;
        w[..5].ShouldBe([1f, -1f, 448f, MathF.Pow(2, -9), 0f]);
        float.IsNaN(w[5]).ShouldBeTrue();
        file.ReadFloat32("v").Data.ShouldBe([1f, float.PositiveInfinity, MathF.Pow(2, -16)]);
        file.ReadFloat32("b").Data.ShouldBe([1f, -2f]);
        file.StoredTensors.Select(t => t.Format.ToString()).ShouldBe(["BF16", "F8_E4M3", "F8_E5M2"], ignoreOrder: true);

        var table = new[] { new ParameterInfo("w", [2, 3], Runtime.Tensors.DType.BF16), new ParameterInfo("b", [2], Runtime.Tensors.DType.BF16) };
        var backend = new InFluxEdit.Tests.Models.UploadOnlyBackend();
        var weights = WeightLoader.Load(table, [file], backend, ignored: name => name == "v");
        weights.Keys.ShouldBe(["w", "b"], ignoreOrder: true);
    }

    [Fact]
    public void Fp8TensorsWhoseSizeDisagreesWithTheShapeAreRejected()
    {
        using var dir = new TempDir();
        string path = dir.File("fp8.safetensors");
        File.WriteAllBytes(path, SafeTensors("""{"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,12]}}""", 12));
        Should.Throw<SafeTensorsException>(() => SafeTensorsFile.Open(path)).Message.ShouldContain("needs 6 bytes");
    }
}
