using System.Buffers.Binary;
using System.Text;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.SafeTensors;

public sealed class SafeTensorsWriterTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    // Exactly representable in F16 and BF16, so every dtype must give them back unchanged.
    private static readonly float[] Representable = [0f, 1f, -2f, 0.5f, 3.25f, -0.125f, 96f, 1024f, -7.5f, 0.375f, 12f, -48f];

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    [InlineData(DType.F64)]
    public void Round_trip_keeps_names_shapes_values_and_metadata(DType dtype)
    {
        string path = _temp.File($"round-trip-{dtype}.safetensors");
        var tensors = new Dictionary<string, HostTensor>
        {
            ["layer.weight"] = new([3, 4], Representable),
            ["layer.bias"] = new([3], [1.5f, -1f, 8f]),
            ["scalar"] = new([], [0.25f]),
            ["empty"] = new([0, 5], []),
        };
        var metadata = new Dictionary<string, string> { ["config"] = """{"depth": 2}""", ["note"] = "ünïcødé" };

        SafeTensorsWriter.Write(path, tensors, metadata, dtype);

        using var file = SafeTensorsFile.Open(path);
        file.Metadata.ShouldBe(metadata, ignoreOrder: true);
        file.Tensors.Select(t => t.Name).ShouldBe(["empty", "layer.bias", "layer.weight", "scalar"]);
        foreach (var (name, expected) in tensors)
        {
            file.GetTensor(name).DType.ShouldBe(dtype);
            HostTensor read = file.ReadFloat32(name);
            read.Shape.ShouldBe(expected.Shape);
            read.Data.ShouldBe(expected.Data);
        }
    }

    [Fact]
    public void Narrowing_to_bf16_rounds_to_nearest_even()
    {
        string path = _temp.File("rounding.safetensors");
        float tie = BitConverter.UInt32BitsToSingle(0x3F80_8000); // halfway between two bf16 values

        SafeTensorsWriter.Write(path, [new("x", new HostTensor([1], [tie]))], dtype: DType.BF16);

        using var file = SafeTensorsFile.Open(path);
        file.ReadFloat32("x").Data[0].ShouldBe(1f);
    }

    [Fact]
    public void Header_is_the_reference_layout_sorted_metadata_first_and_space_padded()
    {
        string path = _temp.File("layout.safetensors");
        var tensors = new Dictionary<string, HostTensor> { ["b"] = new([2], [1f, 2f]), ["a"] = new([1, 1], [3f]) };
        var metadata = new Dictionary<string, string> { ["z"] = "last", ["format"] = "pt" };

        SafeTensorsWriter.Write(path, tensors, metadata);

        byte[] bytes = File.ReadAllBytes(path);
        int headerLength = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        string header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        const string json = """{"__metadata__":{"format":"pt","z":"last"},"a":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""";
        header.ShouldBe(json + new string(' ', headerLength - json.Length));
        (headerLength % 8).ShouldBe(0);
        headerLength.ShouldBeLessThan(json.Length + 8);
        bytes.Length.ShouldBe(8 + headerLength + 12);
        BitConverter.ToSingle(bytes, 8 + headerLength).ShouldBe(3f);
    }

    [Fact]
    public void Same_tensors_in_any_order_give_identical_bytes()
    {
        var a = new KeyValuePair<string, HostTensor>("a", new HostTensor([2], [1f, 2f]));
        var b = new KeyValuePair<string, HostTensor>("b", new HostTensor([1], [3f]));
        var metadataOne = new Dictionary<string, string> { ["x"] = "1", ["y"] = "2" };
        var metadataTwo = new Dictionary<string, string> { ["y"] = "2", ["x"] = "1" };

        SafeTensorsWriter.Write(_temp.File("one"), [a, b], metadataOne, DType.BF16);
        SafeTensorsWriter.Write(_temp.File("two"), [b, a], metadataTwo, DType.BF16);

        File.ReadAllBytes(_temp.File("one")).ShouldBe(File.ReadAllBytes(_temp.File("two")));
    }

    [Fact]
    public void Raw_copy_keeps_every_byte_and_orders_wider_dtypes_first()
    {
        string copy = _temp.File("copy.safetensors");
        using (var source = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-bf16.safetensors")))
        {
            var raw = source.Tensors.Select(t => RawTensor.From(source, t))
                .Append(new RawTensor("extra.f32", DType.F32, [1], BitConverter.GetBytes(5f)));
            SafeTensorsWriter.WriteRaw(copy, raw, source.Metadata);
        }

        using var original = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-bf16.safetensors"));
        using var copied = SafeTensorsFile.Open(copy);
        copied.Metadata.ShouldBe(original.Metadata, ignoreOrder: true);
        copied.Tensors[0].Name.ShouldBe("extra.f32");
        foreach (TensorEntry entry in original.Tensors)
            copied.GetBytes(copied.GetTensor(entry.Name)).SequenceEqual(original.GetBytes(entry)).ShouldBeTrue(entry.Name);
    }

    [Fact]
    public void Raw_tensor_with_the_wrong_byte_count_is_refused_before_anything_is_written()
    {
        string path = _temp.File("wrong.safetensors");
        var error = Should.Throw<ArgumentException>(() =>
            SafeTensorsWriter.WriteRaw(path, [new RawTensor("w", DType.BF16, [3], new byte[4])]));
        error.Message.ShouldContain("'w'");
        Directory.GetFiles(_temp.Path).ShouldBeEmpty();
    }

    [Fact]
    public void Duplicate_and_reserved_names_are_refused()
    {
        var t = new HostTensor([1], [1f]);
        Should.Throw<ArgumentException>(() => SafeTensorsWriter.Write(_temp.File("dup"), [new("a", t), new("a", t)]))
            .Message.ShouldContain("two tensors are named 'a'");
        Should.Throw<ArgumentException>(() => SafeTensorsWriter.Write(_temp.File("meta"), [new("__metadata__", t)]));
    }

    [Fact]
    public void Overwriting_replaces_the_file_and_leaves_no_temporary_file()
    {
        string path = _temp.File("weights.safetensors");
        SafeTensorsWriter.Write(path, [new("old", new HostTensor([1], [1f]))]);
        SafeTensorsWriter.Write(path, [new("new", new HostTensor([2], [2f, 3f]))]);

        using (var file = SafeTensorsFile.Open(path))
            file.Tensors.Select(t => t.Name).ShouldBe(["new"]);
        Directory.GetFiles(_temp.Path).Select(Path.GetFileName).ShouldBe(["weights.safetensors"]);
    }

    [Fact]
    public void Failure_while_gathering_tensors_leaves_the_old_file_intact()
    {
        string path = _temp.File("weights.safetensors");
        SafeTensorsWriter.Write(path, [new("old", new HostTensor([1], [1f]))]);
        byte[] before = File.ReadAllBytes(path);

        Should.Throw<InvalidOperationException>(() => SafeTensorsWriter.Write(path, TensorsThatFailHalfway()));

        File.ReadAllBytes(path).ShouldBe(before);
        Directory.GetFiles(_temp.Path).Select(Path.GetFileName).ShouldBe(["weights.safetensors"]);
    }

    [Fact]
    public void Failure_to_move_into_place_removes_the_temporary_file()
    {
        string blocked = _temp.File("is-a-directory");
        Directory.CreateDirectory(blocked);

        Should.Throw<IOException>(() => SafeTensorsWriter.Write(blocked, [new("x", new HostTensor([1], [1f]))]));

        Directory.GetFiles(_temp.Path).ShouldBeEmpty();
    }

    private static IEnumerable<KeyValuePair<string, HostTensor>> TensorsThatFailHalfway()
    {
        yield return new("first", new HostTensor([1], [1f]));
        throw new InvalidOperationException("the producer of the tensors failed");
    }
}
