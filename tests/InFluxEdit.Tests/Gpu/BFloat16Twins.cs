using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// What the bf16-view op tests share: bf16-representable values (so a float32 tensor and its bf16 twin hold the same
/// numbers), weights made of them, the bit-for-bit comparison of a twin's result with the float32 one, and disposal.
/// </summary>
internal static class BFloat16Twins
{
    /// <summary>offset + scale·u, u uniform in [-1, 1), each rounded to bf16.</summary>
    public static float Value(Random random, float scale = 1f, float offset = 0f) =>
        GpuOpChecks.BFloat16Round(offset + scale * (float)(random.NextDouble() * 2 - 1));

    public static DeviceTensor Weight(IBackend backend, Random random, int[] shape, DType dtype = DType.F32)
    {
        var values = new float[HostTensor.ElementCount(shape)];
        for (int i = 0; i < values.Length; i++)
            values[i] = Value(random);
        return dtype == DType.BF16
            ? backend.UploadWeight(shape, DType.BF16, GpuOpChecks.BFloat16Bytes(values))
            : backend.UploadWeight(shape, DType.F32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    /// <summary>Requires <paramref name="actual"/> to be <paramref name="expected"/>, rounded to bf16 where the run stored bf16, bit for bit.</summary>
    public static void RequireRounded(string what, float[] expected, float[] actual, bool bf16)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            float wanted = bf16 ? GpuOpChecks.BFloat16Round(expected[i]) : expected[i];
            if (BitConverter.SingleToInt32Bits(wanted) != BitConverter.SingleToInt32Bits(actual[i]) && !(float.IsNaN(wanted) && float.IsNaN(actual[i])))
                Assert.Fail($"{what}: element {i} is {actual[i]} on {(bf16 ? "bf16" : "float32")} views, the float32 op gives {expected[i]} → {wanted}");
        }
    }

    public static void DisposeAll(Dictionary<DeviceTensor, DeviceTensor> twins)
    {
        foreach (var (wide, twin) in twins)
        {
            wide.Dispose();
            twin.Dispose();
        }
        twins.Clear();
    }
}
