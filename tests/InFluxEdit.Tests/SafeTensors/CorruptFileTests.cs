using System.Buffers.Binary;
using System.Text;
using InFluxEdit.Runtime.SafeTensors;
using Shouldly;

namespace InFluxEdit.Tests.SafeTensors;

/// <summary>One test per way a safetensors file can be broken: each must fail at open with a message that says how.</summary>
public sealed class CorruptFileTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private const string TwoTensors =
        """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""";

    [Fact]
    public void A_well_formed_file_built_by_the_helper_opens()
    {
        using var file = SafeTensorsFile.Open(WriteFile(TwoTensors, new byte[16]));
        file.Tensors.Select(t => t.Name).ShouldBe(["a", "b"]);
    }

    [Fact]
    public void File_shorter_than_the_length_prefix() =>
        ShouldFail(WriteRaw([1, 2, 3]), "shorter than the 8-byte header length");

    [Fact]
    public void Empty_file() =>
        ShouldFail(WriteRaw([]), "0 bytes long");

    [Fact]
    public void Header_length_larger_than_the_file() =>
        ShouldFail(WriteFile(TwoTensors, new byte[16], headerLength: 5000), "header length field says 5000 bytes but only");

    [Fact]
    public void Header_length_absurd() =>
        ShouldFail(WriteFile(TwoTensors, new byte[16], headerLength: 1UL << 40), "more than the 100000000");

    [Fact]
    public void Header_not_json() =>
        ShouldFail(WriteFile("{\"a\": {\"dtype\": \"F32\", ", new byte[16]), "not valid UTF-8 JSON");

    [Fact]
    public void Header_not_utf8() =>
        ShouldFail(WriteFile(Encoding.Latin1.GetBytes("{\"\xff\xfe\":{}}"), []), "not valid UTF-8 JSON");

    [Fact]
    public void Header_a_json_array() =>
        ShouldFail(WriteFile("[1, 2]", []), "not an object");

    [Theory]
    [InlineData("dtype", """{"a":{"shape":[2],"data_offsets":[0,8]}}""")]
    [InlineData("shape", """{"a":{"dtype":"F32","data_offsets":[0,8]}}""")]
    [InlineData("data_offsets", """{"a":{"dtype":"F32","shape":[2]}}""")]
    public void Entry_missing_a_field(string field, string header) =>
        ShouldFail(WriteFile(header, new byte[8]), $"has no '{field}'");

    [Fact]
    public void Unknown_dtype_names_the_tensor_and_the_supported_list() =>
        ShouldFail(WriteFile("""{"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}""", new byte[8]),
            "tensor 'w' has dtype 'Q4_K'", "F32, F16, BF16, F64");

    [Theory]
    [InlineData("[2, -1]")]
    [InlineData("[2.5]")]
    [InlineData("[\"2\"]")]
    [InlineData("[4294967296]")]
    public void Shape_dims_must_be_non_negative_integers(string shape) =>
        ShouldFail(WriteFile($$$"""{"a":{"dtype":"F32","shape":{{{shape}}},"data_offsets":[0,8]}}""", new byte[8]),
            "dimensions must be non-negative integers");

    [Theory]
    [InlineData("[8, 0]")]
    [InlineData("[0]")]
    [InlineData("[0, 8, 16]")]
    [InlineData("[-8, 0]")]
    [InlineData("\"0-8\"")]
    public void Data_offsets_must_be_an_ordered_pair(string offsets) =>
        ShouldFail(WriteFile($$$"""{"a":{"dtype":"F32","shape":[2],"data_offsets":{{{offsets}}}}}""", new byte[8]),
            "must be [begin, end] with 0 <= begin <= end");

    [Fact]
    public void Header_lying_about_sizes() =>
        ShouldFail(WriteFile("""{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}""", new byte[8]),
            "header lies about sizes", "needs 6 bytes", "span 8");

    [Fact]
    public void Truncated_data_says_how_much_is_missing() =>
        ShouldFail(WriteFile(TwoTensors, new byte[10]), "truncated: expected 16 bytes of tensor data, file has 10");

    [Fact]
    public void Overlapping_tensors_name_both() =>
        ShouldFail(WriteFile(
                """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"z":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""",
                new byte[24]),
            "'a' [0, 16) and 'b' [8, 16) overlap");

    [Fact]
    public void Empty_tensors_may_share_an_offset_with_real_ones()
    {
        string header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}""";
        using var file = SafeTensorsFile.Open(WriteFile(header, new byte[8]));
        file.ReadFloat32("empty").Shape.ShouldBe([0, 3]);
    }

    [Fact]
    public void Duplicate_tensor_names() =>
        ShouldFail(WriteFile(
                """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""",
                new byte[16]),
            "names 'a' twice");

    [Theory]
    [InlineData("[\"x\"]", "is a JSON array")]
    [InlineData("{\"config\": {\"depth\": 2}}", "'__metadata__.config' is a JSON object")]
    [InlineData("{\"steps\": 3}", "'__metadata__.steps' is a JSON number")]
    public void Metadata_must_map_strings_to_strings(string metadata, string phrase) =>
        ShouldFail(WriteFile($$$"""{"__metadata__":{{{metadata}}},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", new byte[8]),
            phrase);

    [Fact]
    public void Integer_tensors_open_but_do_not_read_as_floats()
    {
        string header = """{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""";
        var data = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(data, 49406);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(8), -1);
        string path = WriteFile(header, data);
        using var file = SafeTensorsFile.Open(path);

        file.ReadInt64("ids", out int[] shape).ShouldBe([49406L, -1L]);
        shape.ShouldBe([2]);
        file.TryGetTensor("ids", out _).ShouldBeFalse();
        var error = Should.Throw<SafeTensorsException>(() => file.ReadFloat32("ids"));
        error.Message.ShouldContain("holds I64 values");
        error.Message.ShouldContain(path);
    }

    private void ShouldFail(string path, params string[] phrases)
    {
        var error = Should.Throw<SafeTensorsException>(() => SafeTensorsFile.Open(path).Dispose());
        error.Message.ShouldContain(path);
        error.FilePath.ShouldBe(path);
        foreach (string phrase in phrases)
            error.Message.ShouldContain(phrase);
    }

    private string WriteFile(string header, byte[] data, ulong? headerLength = null) =>
        WriteFile(Encoding.UTF8.GetBytes(header), data, headerLength);

    private string WriteFile(byte[] header, byte[] data, ulong? headerLength = null)
    {
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return WriteRaw(bytes);
    }

    private string WriteRaw(byte[] bytes)
    {
        string path = _temp.File($"case-{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
