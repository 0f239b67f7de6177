using System.Buffers.Binary;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.SafeTensors;

public class Float16ConversionsTests
{
    [Theory]
    [InlineData(0x3F80_0000u, (ushort)0x3F80)] // 1.0 is exact
    [InlineData(0x3F80_7FFFu, (ushort)0x3F80)] // below half an ulp rounds down
    [InlineData(0x3F80_8000u, (ushort)0x3F80)] // a tie goes to the even neighbour (down)
    [InlineData(0x3F81_8000u, (ushort)0x3F82)] // a tie goes to the even neighbour (up)
    [InlineData(0x3F80_8001u, (ushort)0x3F81)] // above half an ulp rounds up
    [InlineData(0x7F7F_FFFFu, (ushort)0x7F80)] // float.MaxValue overflows to +inf, as in PyTorch
    [InlineData(0xFF80_0000u, (ushort)0xFF80)] // -inf stays -inf
    [InlineData(0x7F80_0001u, (ushort)0x7FC0)] // a NaN with only low payload bits stays NaN instead of becoming inf
    [InlineData(0x0000_8000u, (ushort)0x0000)] // a tie among subnormals goes to even (zero)
    public void Narrowing_rounds_to_nearest_even(uint floatBits, ushort expected)
    {
        float value = BitConverter.UInt32BitsToSingle(floatBits);
        BFloat16.FromSingle(value).ShouldBe(expected);

        // Long enough to run the vector loop as well as the scalar tail.
        var values = Enumerable.Repeat(value, 67).ToArray();
        var bytes = new byte[values.Length * 2];
        BFloat16.FromSingle(values, bytes);
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(i * 2)).ShouldBe(expected, $"element {i}");
    }

    [Fact]
    public void Vector_and_scalar_paths_agree_for_every_length_up_to_several_vectors()
    {
        var random = new Random(1234);
        for (int length = 0; length < 80; length++)
        {
            var bits = new uint[length];
            for (int i = 0; i < length; i++) bits[i] = (uint)random.NextInt64(0, 1L << 32);
            float[] values = bits.Select(BitConverter.UInt32BitsToSingle).ToArray();

            var narrowed = new byte[length * 2];
            BFloat16.FromSingle(values, narrowed);
            var widened = new float[length];
            BFloat16.ToSingle(narrowed, widened);

            for (int i = 0; i < length; i++)
            {
                ushort expected = BFloat16.FromSingle(values[i]);
                BinaryPrimitives.ReadUInt16LittleEndian(narrowed.AsSpan(i * 2)).ShouldBe(expected, $"length {length}, element {i}");
                BitConverter.SingleToUInt32Bits(widened[i]).ShouldBe((uint)expected << 16, $"length {length}, element {i}");
            }
        }
    }

    [Fact]
    public void Float16_round_trips_representable_values_and_rounds_others_like_System_Half()
    {
        float[] values = [0f, -0f, 1f, -2.5f, 65504f, 6.1035156e-05f, 5.9604645e-08f, float.PositiveInfinity, 0.1f, 70000f];
        var bytes = new byte[values.Length * 2];
        Float16.FromSingle(values, bytes);
        var back = new float[values.Length];
        Float16.ToSingle(bytes, back);

        for (int i = 0; i < values.Length; i++)
            back[i].ShouldBe((float)(Half)values[i], $"element {i}");
        back[..8].ShouldBe(values[..8]);
    }

    [Fact]
    public void Mismatched_buffer_lengths_are_rejected()
    {
        Should.Throw<ArgumentException>(() => BFloat16.ToSingle(new byte[6], new float[4]));
        Should.Throw<ArgumentException>(() => BFloat16.FromSingle(new float[3], new byte[5]));
    }
}
