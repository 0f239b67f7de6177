using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Backends.Cpu;

/// <summary>
/// A linear layer's weight [out, in] held in its quantized blocks (fp8 or a ggml block format, blocks along each row).
/// The float32 weight never exists whole: the products decode a panel of rows or of block columns at a time
/// (<see cref="CpuQuantizedGemm"/>). DType is F32, the values ops compute with; <see cref="Format"/> is how they are held.
/// </summary>
public sealed class CpuQuantizedTensor : DeviceTensor
{
    private byte[]? _blocks;

    internal CpuQuantizedTensor(int[] shape, QuantizedBlocks weight) : base(shape, DType.F32)
    {
        QuantizedWeights.RequireLinearShape(shape, weight);
        _blocks = weight.Bytes;
        Format = weight.Format;
        Scale = weight.Scale;
        RowBytes = weight.Format.ByteCount([shape[1]])!.Value;
    }

    public TensorFormat Format { get; }

    /// <summary>The factor every decoded value is multiplied by, in float32 (see <see cref="QuantizedBlocks"/>).</summary>
    public float Scale { get; }

    public int OutFeatures => Shape[0];
    public int InFeatures => Shape[1];

    /// <summary>Bytes one row of the weight (one output feature) takes.</summary>
    private long RowBytes { get; }

    public bool IsDisposed => _blocks is null;

    public override long StoredBytes => _blocks?.LongLength ?? 0;

    private byte[] Blocks => _blocks ?? throw new ObjectDisposedException(ToString());

    /// <summary>Rows [first, first + count) of the weight as float32, row after row (count·in values).</summary>
    internal void DecodeRows(int first, int count, Span<float> destination) =>
        TensorDecoder.Decode(Format, Blocks.AsSpan().Slice(checked((int)(first * RowBytes)), checked((int)(count * RowBytes))),
            destination[..(count * InFeatures)], Scale);

    /// <summary>
    /// Columns [first, first + width) of every row as a row-major [out, width] block; first and width are whole blocks of
    /// the format (the last block column may end at <see cref="InFeatures"/>).
    /// </summary>
    internal void DecodeColumns(int first, int width, Span<float> destination)
    {
        int blockElements = Format.BlockElements(), blockBytes = Format.BlockBytes();
        if (first % blockElements != 0 || width % blockElements != 0)
            throw new ArgumentException($"columns [{first}, {first + width}) do not start and end on {Format}'s {blockElements}-value blocks");
        ReadOnlySpan<byte> blocks = Blocks;
        int offset = first / blockElements * blockBytes, bytes = width / blockElements * blockBytes;
        for (int row = 0; row < OutFeatures; row++)
            TensorDecoder.Decode(Format, blocks.Slice(checked((int)(row * RowBytes + offset)), bytes), destination.Slice(row * width, width), Scale);
    }

    public override void Dispose() => _blocks = null;

    public override string ToString() => $"{Format}{HostTensor.FormatShape(Shape)}";
}
