using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Models;

/// <summary>A backend that only stores weights, in host memory, and records what happened to them.</summary>
internal sealed class UploadOnlyBackend(int failOnUpload = -1) : IBackend
{
    public List<StoredWeight> Uploaded { get; } = [];

    public string Name => "test";
    public string Description => "stores weights in host memory for loader tests";

    public DeviceTensor UploadWeight(int[] shape, DType dtype, ReadOnlySpan<byte> raw)
    {
        if (Uploaded.Count == failOnUpload)
            throw new OutOfMemoryException("test backend: out of device memory");
        var weight = new StoredWeight(shape, dtype, raw.ToArray());
        Uploaded.Add(weight);
        return weight;
    }

    public DeviceTensor Allocate(int[] shape) => throw new NotSupportedException();
    public DeviceTensor Upload(HostTensor host) => throw new NotSupportedException();
    public HostTensor Download(View view, int[] shape) => throw new NotSupportedException();
    public void Synchronize() => throw new NotSupportedException();
    public void Linear(View y, View x, DeviceTensor weight, DeviceTensor? bias) => throw new NotSupportedException();
    public void LayerNorm(View y, View x, float eps) => throw new NotSupportedException();
    public void RmsNorm(View y, View x, DeviceTensor scale, int groupSize, float eps) => throw new NotSupportedException();
    public void Modulate(View y, View x, View shift, View scale) => throw new NotSupportedException();
    public void GatedResidual(View y, View residual, View x, View gate) => throw new NotSupportedException();
    public void Add(View y, View a, View b) => throw new NotSupportedException();
    public void Silu(View y, View x) => throw new NotSupportedException();
    public void GeluTanh(View y, View x) => throw new NotSupportedException();
    public void Copy(View y, View x) => throw new NotSupportedException();
    public void ScaleShift(View y, View x, float scale, float shift) => throw new NotSupportedException();
    public void Transpose(View y, View x) => throw new NotSupportedException();
    public void TimestepEmbedding(View y, View t, float timeFactor, float maxPeriod) => throw new NotSupportedException();
    public void RopeEmbed(View pe, View ids, int[] axesDim, float theta) => throw new NotSupportedException();
    public void ApplyRope(View y, View x, View pe, int headDim) => throw new NotSupportedException();
    public void Embedding(View y, View ids, DeviceTensor table) => throw new NotSupportedException();
    public void AddPositionEmbedding(View y, View x, DeviceTensor table) => throw new NotSupportedException();
    public void AffineLayerNorm(View y, View x, DeviceTensor scale, DeviceTensor? bias, float eps) => throw new NotSupportedException();
    public void QuickGelu(View y, View x) => throw new NotSupportedException();
    public void Multiply(View y, View a, View b) => throw new NotSupportedException();
    public void RelativePositionBias(View bias, DeviceTensor table, int buckets, int maxDistance, bool bidirectional) => throw new NotSupportedException();
    public void MaskedAttention(View o, View q, View k, View v, int heads, float scale, View? bias, bool causal) => throw new NotSupportedException();
    public void GatherArgmaxRows(View y, View x, View ids) => throw new NotSupportedException();
    public void Attention(View o, View q, View k, View v, int heads, float scale) => throw new NotSupportedException();
    public void Conv2d(View y, View x, int height, int width, DeviceTensor weight, DeviceTensor? bias, int stride, Padding2d padding) => throw new NotSupportedException();
    public void GroupNorm(View y, View x, int groups, DeviceTensor? scale, DeviceTensor? bias, float eps) => throw new NotSupportedException();
    public void UpsampleNearest2x(View y, View x, int height, int width) => throw new NotSupportedException();
    public void Dispose() { }

    internal sealed class StoredWeight(int[] shape, DType dtype, byte[] bytes) : DeviceTensor(shape, dtype)
    {
        public byte[] Bytes { get; } = bytes;
        public bool Disposed { get; private set; }
        public override void Dispose() => Disposed = true;
    }
}

/// <summary>Progress that records every report at once (Progress&lt;T&gt; posts to a thread pool later).</summary>
internal sealed class RecordingProgress : IProgress<(int done, int total)>
{
    public List<(int done, int total)> Reports { get; } = [];
    public void Report((int done, int total) value) => Reports.Add(value);
}
