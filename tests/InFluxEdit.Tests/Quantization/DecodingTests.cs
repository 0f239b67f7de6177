using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.WeightFiles;
using Shouldly;

namespace InFluxEdit.Tests.Quantization;

/// <summary>Every stored format decodes to exactly the value its published layout defines, in memory and read from GGUF files.</summary>
public class DecodingTests
{
    public static TheoryData<string> GgmlTypeNames() => new(IndependentGgml.Types.Keys);

    internal static void ShouldBeBitwise(float[] actual, float[] expected, string what)
    {
        actual.Length.ShouldBe(expected.Length, what);
        for (int i = 0; i < actual.Length; i++)
        {
            bool same = BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i])
                || float.IsNaN(actual[i]) && float.IsNaN(expected[i]);
            if (!same)
                throw new ShouldAssertException($"{what}[{i}]: decoded {actual[i]:R}, the layout defines {expected[i]:R}");
        }
    }

    [Theory]
    [MemberData(nameof(GgmlTypeNames))]
    public void RandomBlocksDecodeToTheValuesTheLayoutDefines(string type)
    {
        var (_, elements, bytes) = IndependentGgml.Types[type];
        Enum.TryParse(type, out TensorFormat format).ShouldBeTrue();
        var random = new Random(type.GetHashCode() & 0xFFFF);
        foreach (int blocks in new[] { 1, 3, 17 })
        {
            var data = new byte[blocks * bytes];
            random.NextBytes(data);
            var decoded = new float[blocks * elements];
            TensorDecoder.Decode(format, data, decoded);
            ShouldBeBitwise(decoded, IndependentGgml.DecodeTensor(type, data, decoded.Length), $"{type} × {blocks} blocks");
        }
    }

    [Fact]
    public void Fp8CodesDecodeToTheirOcpValues()
    {
        for (int code = 0; code < 256; code++)
        {
            bool negative = code >> 7 == 1;
            // E4M3FN: 4 exponent bits (bias 7), 3 mantissa bits; exponent and mantissa all ones is NaN, nothing is infinite.
            int e4 = (code >> 3) & 15, m3 = code & 7;
            double e4m3 = e4 == 15 && m3 == 7 ? double.NaN
                : e4 == 0 ? m3 / 8.0 * Math.Pow(2, -6)
                : (1 + m3 / 8.0) * Math.Pow(2, e4 - 7);
            // E5M2: IEEE-style, bias 15, exponent all ones is ±inf (mantissa 0) or NaN.
            int e5 = (code >> 2) & 31, m2 = code & 3;
            double e5m2 = e5 == 31 ? (m2 == 0 ? double.PositiveInfinity : double.NaN)
                : e5 == 0 ? m2 / 4.0 * Math.Pow(2, -14)
                : (1 + m2 / 4.0) * Math.Pow(2, e5 - 15);
            ShouldBeBitwise([Float8.E4M3ToSingle((byte)code)], [(float)(negative ? -e4m3 : e4m3)], $"E4M3 code 0x{code:X2}");
            ShouldBeBitwise([Float8.E5M2ToSingle((byte)code)], [(float)(negative ? -e5m2 : e5m2)], $"E5M2 code 0x{code:X2}");
        }
        Float8.E4M3ToSingle(0x7E).ShouldBe(448f);
        Float8.E5M2ToSingle(0x7B).ShouldBe(57344f);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Fp8EncodingRoundsToTheNearestCodeTiesToEvenAndSaturates(bool e4m3)
    {
        Func<float, byte> encode = e4m3 ? Float8.E4M3FromSingle : Float8.E5M2FromSingle;
        Func<byte, float> decode = e4m3 ? Float8.E4M3ToSingle : Float8.E5M2ToSingle;
        float max = e4m3 ? 448f : 57344f;
        var finite = Enumerable.Range(0, 256).Select(c => (byte)c).Where(c => float.IsFinite(decode(c))).ToList();
        var random = new Random(7);
        var samples = Enumerable.Range(0, 4000).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-20, 18))))
            .Concat(finite.Select(decode))
            .Concat(finite.SelectMany(a => finite.Where(b => decode(b) > decode(a)).Take(1).Select(b => (decode(a) + decode(b)) / 2))) // midpoints
            .ToList();
        foreach (float value in samples)
        {
            byte code = encode(value);
            float clamped = Math.Clamp(value, -max, max);
            // Brute force: the closest finite code; on a tie, the one with an even mantissa (even code).
            double best = finite.Min(c => Math.Abs((double)decode(c) - clamped));
            var nearest = finite.Where(c => Math.Abs((double)decode(c) - clamped) == best).ToList();
            byte expected = nearest.Count == 1 ? nearest[0] : nearest.Where(c => c % 2 == 0).OrderBy(c => c & 0x80).First();
            if (decode(code) != decode(expected))
                throw new ShouldAssertException($"{value:R} encoded as 0x{code:X2} ({decode(code)}); nearest-even is 0x{expected:X2} ({decode(expected)})");
        }
        decode(encode(float.NaN)).ShouldBe(float.NaN);
        decode(encode(1e30f)).ShouldBe(max);
        decode(encode(-1e30f)).ShouldBe(-max);
        decode(encode(float.PositiveInfinity)).ShouldBe(e4m3 ? max : float.PositiveInfinity);
    }

    [Fact]
    public void GgufWrittenByAnIndependentWriterReadsBack()
    {
        var random = new Random(12);
        using var dir = new TempDir();
        var builder = new IndependentGgml.GgufBuilder { Alignment = 64 };
        builder.Kv("general.alignment", 4, BitConverter.GetBytes(64u))
            .Kv("u8", 0, [200]).Kv("i8", 1, [0xFE]).Kv("u16", 2, BitConverter.GetBytes((ushort)60000))
            .Kv("i16", 3, BitConverter.GetBytes((short)-3000)).Kv("u32", 4, BitConverter.GetBytes(4_000_000_000u))
            .Kv("i32", 5, BitConverter.GetBytes(-7)).Kv("f32", 6, BitConverter.GetBytes(1.5f)).Kv("bool", 7, [1])
            .KvString("general.name", "flux1-fill-dev ünïcode").Kv("u64", 10, BitConverter.GetBytes(ulong.MaxValue))
            .Kv("i64", 11, BitConverter.GetBytes(long.MinValue)).Kv("f64", 12, BitConverter.GetBytes(Math.PI))
            .Kv("ints", 9, [.. BitConverter.GetBytes(5u), .. BitConverter.GetBytes(3UL), .. BitConverter.GetBytes(1), .. BitConverter.GetBytes(-2), .. BitConverter.GetBytes(3)])
            .Kv("words", 9, [.. BitConverter.GetBytes(8u), .. BitConverter.GetBytes(2UL), .. IndependentGgml.GgufBuilder.StringPayload("a"), .. IndependentGgml.GgufBuilder.StringPayload("▁bc")])
            .Kv("nested", 9, [.. BitConverter.GetBytes(9u), .. BitConverter.GetBytes(1UL), .. BitConverter.GetBytes(0u), .. BitConverter.GetBytes(2UL), 4, 5]);

        // Shapes the tests do not otherwise use, several blocks per row and several rows, 1–4 dimensions.
        var expected = new Dictionary<string, (int[] Shape, float[] Values)>();
        int n = 0;
        foreach (var (type, (id, elements, bytes)) in IndependentGgml.Types)
        {
            foreach (long[] dims in new[] { new long[] { elements * 3, 5 }, [elements, 2, 3], [elements * 2], [elements, 1, 2, 2] })
            {
                long count = dims.Aggregate(1L, (a, b) => a * b);
                var data = new byte[count / elements * bytes];
                random.NextBytes(data);
                string name = $"blocks.{n++}.{type.ToLowerInvariant()}.weight";
                builder.Tensor(name, dims, id, data);
                expected[name] = (dims.Reverse().Select(d => (int)d).ToArray(), IndependentGgml.DecodeTensor(type, data, count));
            }
        }
        string path = dir.File("independent.gguf");
        File.WriteAllBytes(path, builder.Build());

        using var file = GgufFile.Open(path);
        file.Alignment.ShouldBe(64);
        (file.DataStart % 64).ShouldBe(0);
        file.Values["u8"].ShouldBe((byte)200);
        file.Values["i8"].ShouldBe((sbyte)-2);
        file.Values["u16"].ShouldBe((ushort)60000);
        file.Values["i16"].ShouldBe((short)-3000);
        file.Values["u32"].ShouldBe(4_000_000_000u);
        file.Values["i32"].ShouldBe(-7);
        file.Values["f32"].ShouldBe(1.5f);
        file.Values["bool"].ShouldBe(true);
        file.Values["general.name"].ShouldBe("flux1-fill-dev ünïcode");
        file.Values["u64"].ShouldBe(ulong.MaxValue);
        file.Values["i64"].ShouldBe(long.MinValue);
        file.Values["f64"].ShouldBe(Math.PI);
        file.Values["ints"].ShouldBe(new[] { 1, -2, 3 });
        file.Values["words"].ShouldBe(new[] { "a", "▁bc" });
        ((object[])file.Values["nested"]).ShouldHaveSingleItem().ShouldBe(new byte[] { 4, 5 });
        file.Metadata["general.name"].ShouldBe("flux1-fill-dev ünïcode");

        file.StoredTensors.Select(t => t.Name).ShouldBe(expected.Keys);
        foreach (StoredTensor tensor in file.StoredTensors)
        {
            tensor.Shape.ShouldBe(expected[tensor.Name].Shape, tensor.Name);
            ShouldBeBitwise(file.ReadFloat32(tensor).Data, expected[tensor.Name].Values, tensor.Name);
        }
    }
}
