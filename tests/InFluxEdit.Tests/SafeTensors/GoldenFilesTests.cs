using System.Buffers.Binary;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.SafeTensors;

/// <summary>The shared golden files were written by the Python reference: reading them checks us against it.</summary>
public class GoldenFilesTests
{
    public static TheoryData<string> GoldenFiles()
    {
        var data = new TheoryData<string>();
        foreach (string path in Directory.GetFiles(TestPaths.GoldenDir, "*.safetensors").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(path));
        return data;
    }

    [Theory]
    [MemberData(nameof(GoldenFiles))]
    public void Every_golden_file_opens_and_every_float_tensor_reads(string fileName)
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden(fileName));

        (file.Tensors.Count + file.OtherTensors.Count).ShouldBeGreaterThan(0);
        foreach (TensorEntry entry in file.Tensors)
        {
            HostTensor tensor = file.ReadFloat32(entry.Name);
            tensor.Shape.ShouldBe(entry.Shape);
            tensor.Data.ShouldAllBe(v => !float.IsNaN(v), $"{fileName}: {entry.Name}");
        }
        foreach (OtherTensorEntry entry in file.OtherTensors.Where(t => t.DTypeName == "I64"))
            file.ReadInt64(entry.Name, out _).Length.ShouldBe((int)HostTensor.ElementCount(entry.Shape));
    }

    [Fact]
    public void Weights_file_exposes_its_config_metadata()
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        file.Metadata["format"].ShouldBe("bfl");
        file.Metadata["config"].ShouldContain("\"in_channels\": 384");
        file.GetTensor("img_in.weight").ShouldBe(file.Tensors[0]);
        file.GetTensor("img_in.weight").Shape.ShouldBe([64, 384]);
    }

    [Fact]
    public void Bf16_weights_read_as_the_exact_upcast_and_are_the_rounded_float32_weights()
    {
        using var bf16 = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-bf16.safetensors"));
        using var f32 = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        bf16.Tensors.Count.ShouldBe(f32.Tensors.Count);

        foreach (TensorEntry entry in bf16.Tensors)
        {
            entry.DType.ShouldBe(DType.BF16);
            ReadOnlySpan<byte> raw = bf16.GetBytes(entry);
            float[] widened = bf16.ReadFloat32(entry.Name).Data;
            for (int i = 0; i < widened.Length; i++)
                BitConverter.SingleToUInt32Bits(widened[i]).ShouldBe((uint)BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]) << 16);

            // The reference made the bf16 file with tensor.to(torch.bfloat16): our narrowing must give the same bits.
            float[] full = f32.ReadFloat32(entry.Name).Data;
            var narrowed = new byte[full.Length * 2];
            BFloat16.FromSingle(full, narrowed);
            narrowed.AsSpan().SequenceEqual(raw).ShouldBeTrue($"{entry.Name} narrowed differently from PyTorch");
        }
    }

    [Fact]
    public void Missing_tensor_names_the_file()
    {
        string path = TestPaths.Golden("embeddings.safetensors");
        using var file = SafeTensorsFile.Open(path);
        var error = Should.Throw<KeyNotFoundException>(() => file.GetTensor("no.such.tensor"));
        error.Message.ShouldContain(path);
        error.Message.ShouldContain("no.such.tensor");
        file.TryGetTensor("no.such.tensor", out _).ShouldBeFalse();
    }

    [Fact]
    public void Entries_of_another_file_and_a_disposed_file_are_refused()
    {
        var first = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        using var second = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny-bf16.safetensors"));
        TensorEntry foreign = second.GetTensor("img_in.weight");
        Should.Throw<ArgumentException>(() => first.GetBytes(foreign).Length);

        TensorEntry own = first.GetTensor("img_in.weight");
        first.Dispose();
        Should.Throw<ObjectDisposedException>(() => first.GetBytes(own).Length);
    }
}
