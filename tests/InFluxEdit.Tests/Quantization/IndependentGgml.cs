using System.Text;

namespace InFluxEdit.Tests.Quantization;

/// <summary>
/// A second, independent reading of ggml's formats for the tests, written from the block structs of ggml-common.h
/// and the formulas of ggml-quants.c with a different structure from the runtime's: every element is computed on
/// its own from its index (where in the block its bits live), with no shared helpers with the runtime.
/// </summary>
internal static class IndependentGgml
{
    public static readonly Dictionary<string, (uint TypeId, int Elements, int Bytes)> Types = new()
    {
        ["F32"] = (0, 1, 4), ["F16"] = (1, 1, 2), ["BF16"] = (30, 1, 2),
        ["Q4_0"] = (2, 32, 18), ["Q4_1"] = (3, 32, 20), ["Q5_0"] = (6, 32, 22), ["Q5_1"] = (7, 32, 24), ["Q8_0"] = (8, 32, 34),
        ["Q2_K"] = (10, 256, 84), ["Q3_K"] = (11, 256, 110), ["Q4_K"] = (12, 256, 144), ["Q5_K"] = (13, 256, 176), ["Q6_K"] = (14, 256, 210),
    };

    private static float F16(byte[] b, int at) => (float)BitConverter.ToHalf(b, at);

    private static int Bit(byte[] b, int byteIndex, int bit) => (b[byteIndex] >> bit) & 1;

    /// <summary>Element <paramref name="i"/> of one block (<paramref name="b"/> holds just that block).</summary>
    public static float Element(string type, byte[] b, int i)
    {
        switch (type)
        {
            case "F32": return BitConverter.ToSingle(b, 0);
            case "F16": return F16(b, 0);
            case "BF16": return BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(b, 0) << 16);
            case "Q8_0": return (sbyte)b[2 + i] * F16(b, 0);
            case "Q4_0": return (Nibble(b, 2, i) - 8) * F16(b, 0);
            case "Q4_1": return Nibble(b, 4, i) * F16(b, 0) + F16(b, 2);
            case "Q5_0": return ((Nibble(b, 6, i) + 16 * Bit(b, 2 + i / 8, i % 8)) - 16) * F16(b, 0);
            case "Q5_1": return (Nibble(b, 8, i) + 16 * Bit(b, 4 + i / 8, i % 8)) * F16(b, 0) + F16(b, 2);
            case "Q2_K":
            {
                var (half, pass, l) = (i / 128, i % 128 / 32, i % 32);
                int code = (b[16 + half * 32 + l] >> (2 * pass)) & 3;
                byte scale = b[half * 8 + pass * 2 + l / 16];
                return F16(b, 80) * (scale & 15) * code - F16(b, 82) * (scale >> 4);
            }
            case "Q3_K":
            {
                var (half, pass, l) = (i / 128, i % 128 / 32, i % 32);
                int code = (b[32 + half * 32 + l] >> (2 * pass)) & 3;
                int high = Bit(b, l, half * 4 + pass);
                int scale = Q3Scales(b)[half * 8 + pass * 2 + l / 16];
                return F16(b, 108) * (scale - 32) * (code - (high == 1 ? 0 : 4));
            }
            case "Q4_K":
            case "Q5_K":
            {
                var (chunk, upper, l) = (i / 64, i % 64 / 32, i % 32);
                int group = 2 * chunk + upper;
                int qsAt = type == "Q4_K" ? 16 : 48;
                int code = (b[qsAt + chunk * 32 + l] >> (4 * upper)) & 15;
                if (type == "Q5_K") code += 16 * Bit(b, 16 + l, group);
                var (scale, min) = SixBitScaleMin(b, 4, group);
                return F16(b, 0) * scale * code - F16(b, 2) * min;
            }
            case "Q6_K":
            {
                var (half, quarter, l) = (i / 128, i % 128 / 32, i % 32);
                int low = (b[half * 64 + (quarter % 2) * 32 + l] >> (4 * (quarter / 2))) & 15;
                int high = (b[128 + half * 32 + l] >> (2 * quarter)) & 3;
                int scale = (sbyte)b[192 + half * 8 + quarter * 2 + l / 16];
                return F16(b, 208) * scale * ((low | high << 4) - 32);
            }
            default: throw new ArgumentException(type);
        }
    }

    // Element j < 16 is the low nibble of byte j, element j ≥ 16 the high nibble of byte j − 16.
    private static int Nibble(byte[] b, int at, int i) => i < 16 ? b[at + i] & 15 : b[at + i - 16] >> 4;

    /// <summary>Q3_K's 16 six-bit scales as ggml unpacks them: four uint32 words rebuilt with kmask1/kmask2.</summary>
    private static sbyte[] Q3Scales(byte[] b)
    {
        uint a0 = BitConverter.ToUInt32(b, 96), a1 = BitConverter.ToUInt32(b, 100), tmp = BitConverter.ToUInt32(b, 104);
        const uint m1 = 0x03030303, m2 = 0x0f0f0f0f;
        uint[] words =
        [
            (a0 & m2) | (((tmp >> 0) & m1) << 4),
            (a1 & m2) | (((tmp >> 2) & m1) << 4),
            ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4),
            ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4),
        ];
        return words.SelectMany(BitConverter.GetBytes).Select(x => (sbyte)x).ToArray();
    }

    /// <summary>Q4_K/Q5_K scale and min of group j: 12 bytes as a 96-bit little-endian field of eight 6-bit pairs, read bit by bit.</summary>
    private static (int Scale, int Min) SixBitScaleMin(byte[] b, int at, int j)
    {
        // Groups 0–3 keep their 6 bits in bytes j (scale) and j + 4 (min); groups 4–7 keep the low 4 bits in byte j + 4's
        // nibbles and the top 2 bits in the spare top bits of bytes j − 4 (scale) and j (min).
        int Bits(int byteIndex, int from, int count) => (b[at + byteIndex] >> from) & ((1 << count) - 1);
        return j < 4
            ? (Bits(j, 0, 6), Bits(j + 4, 0, 6))
            : (Bits(j + 4, 0, 4) + (Bits(j - 4, 6, 2) << 4), Bits(j + 4, 4, 4) + (Bits(j, 6, 2) << 4));
    }

    public static float[] DecodeTensor(string type, byte[] data, long elements)
    {
        var (_, blockElements, blockBytes) = Types[type];
        var values = new float[elements];
        for (long e = 0; e < elements; e++)
        {
            long block = e / blockElements;
            byte[] bytes = data.AsSpan((int)(block * blockBytes), blockBytes).ToArray();
            values[e] = Element(type, bytes, (int)(e % blockElements));
        }
        return values;
    }

    /// <summary>ggml's reference Q8_0 quantizer, written out plainly: scale amax/127, codes round(x/d) half away from zero.</summary>
    public static byte[] QuantizeQ8_0(float[] x)
    {
        var output = new List<byte>();
        for (int start = 0; start < x.Length; start += 32)
        {
            float amax = x.Skip(start).Take(32).Select(Math.Abs).Max();
            float d = amax / 127f;
            float id = d == 0 ? 0 : 1f / d;
            output.AddRange(BitConverter.GetBytes((Half)d));
            for (int j = 0; j < 32; j++)
                output.Add(unchecked((byte)(sbyte)MathF.Round(x[start + j] * id, MidpointRounding.AwayFromZero)));
        }
        return output.ToArray();
    }

    /// <summary>ggml's reference Q4_0 quantizer: d = (signed value of largest magnitude) / −8, codes trunc(x/d + 8.5) capped at 15.</summary>
    public static byte[] QuantizeQ4_0(float[] x)
    {
        var output = new List<byte>();
        for (int start = 0; start < x.Length; start += 32)
        {
            float max = 0;
            for (int j = 0; j < 32; j++)
                if (Math.Abs(x[start + j]) > Math.Abs(max)) max = x[start + j];
            float d = max / -8f;
            float id = d == 0 ? 0 : 1f / d;
            output.AddRange(BitConverter.GetBytes((Half)d));
            int Code(int j) => Math.Min(15, (int)Math.Truncate(x[start + j] * id + 8.5f));
            for (int j = 0; j < 16; j++)
                output.Add((byte)(Code(j) | Code(j + 16) << 4));
        }
        return output.ToArray();
    }

    /// <summary>
    /// A minimal GGUF v3 writer, byte by byte from docs/gguf.md: header, key/values, tensor infos (dimensions
    /// innermost first), zero padding to the alignment before the data and between tensors.
    /// </summary>
    public sealed class GgufBuilder
    {
        private readonly MemoryStream _kv = new();
        private readonly List<(string Name, long[] DimsInnermostFirst, uint Type, byte[] Data)> _tensors = [];
        private int _kvCount;

        public uint Version { get; set; } = 3;
        public int Alignment { get; set; } = 32;
        public Func<int, long, long>? OffsetOverride { get; set; }

        private static byte[] Str(string s)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(s);
            return [.. BitConverter.GetBytes((ulong)utf8.Length), .. utf8];
        }

        public GgufBuilder Kv(string key, uint type, byte[] payload)
        {
            _kv.Write(Str(key));
            _kv.Write(BitConverter.GetBytes(type));
            _kv.Write(payload);
            _kvCount++;
            return this;
        }

        public GgufBuilder KvString(string key, string value) => Kv(key, 8, Str(value));

        public static byte[] StringPayload(string value) => Str(value);

        public GgufBuilder Tensor(string name, long[] dimsInnermostFirst, uint type, byte[] data)
        {
            _tensors.Add((name, dimsInnermostFirst, type, data));
            return this;
        }

        public byte[] Build()
        {
            var file = new MemoryStream();
            file.Write("GGUF"u8);
            file.Write(BitConverter.GetBytes(Version));
            file.Write(BitConverter.GetBytes((ulong)_tensors.Count));
            file.Write(BitConverter.GetBytes((ulong)_kvCount));
            file.Write(_kv.ToArray());
            long offset = 0;
            var offsets = new List<long>();
            for (int t = 0; t < _tensors.Count; t++)
            {
                var (name, dims, type, data) = _tensors[t];
                long at = OffsetOverride?.Invoke(t, offset) ?? offset;
                offsets.Add(at);
                file.Write(Str(name));
                file.Write(BitConverter.GetBytes((uint)dims.Length));
                foreach (long d in dims) file.Write(BitConverter.GetBytes((ulong)d));
                file.Write(BitConverter.GetBytes(type));
                file.Write(BitConverter.GetBytes((ulong)at));
                offset += data.Length;
                offset += (Alignment - offset % Alignment) % Alignment;
            }
            while (file.Length % Alignment != 0) file.WriteByte(0);
            long dataStart = file.Length;
            for (int t = 0; t < _tensors.Count; t++)
            {
                while (file.Length < dataStart + offsets[t]) file.WriteByte(0);
                file.Position = dataStart + offsets[t];
                file.Write(_tensors[t].Data);
            }
            return file.ToArray();
        }
    }
}
