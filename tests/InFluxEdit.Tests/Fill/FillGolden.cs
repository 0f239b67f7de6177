using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Fill;

/// <summary>Shared pieces of the Fill tests: the golden cases' tensors and the guard for tests that need the VAE.</summary>
internal static class FillGolden
{
    public static HostTensor Read(string file, string tensor)
    {
        using var data = SafeTensorsFile.Open(TestPaths.Golden(file));
        return data.ReadFloat32(tensor);
    }

    /// <summary>Features [from, from + count) of every token of [B, L, F].</summary>
    public static HostTensor Features(HostTensor tokens, int from, int count)
    {
        int rows = tokens.Shape[0] * tokens.Shape[1], features = tokens.Shape[2];
        var slice = new HostTensor(tokens.Shape[0], tokens.Shape[1], count);
        for (int row = 0; row < rows; row++) Array.Copy(tokens.Data, row * features + from, slice.Data, row * count, count);
        return slice;
    }

    /// <summary>
    /// Fails (never skips) a test that needs the compiled FLUX VAE while the build has none: these tests must turn
    /// green when the VAE schema lands, and must not look green before.
    /// </summary>
    public static void RequireCompiledVae() =>
        ModelCatalog.All.Any(m => m.Descriptor.Family == VaeCodec.Family).ShouldBeTrue(
            $"this test needs a compiled '{VaeCodec.Family}' model (FluxVaeTiny), and the build has none: " +
            string.Join(", ", ModelCatalog.All.Select(m => $"{m.Descriptor.Name} ({m.Descriptor.Family})")));

    /// <summary>The fill case's txt and vec as a text-embeddings file for influx-cli edit.</summary>
    public static string WriteTextEmbeddings(TempDir dir)
    {
        string path = dir.File("text.safetensors");
        SafeTensorsWriter.Write(path, new Dictionary<string, HostTensor>
        {
            ["txt"] = Read("fill-tiny-case.safetensors", "txt"),
            ["vec"] = Read("fill-tiny-case.safetensors", "vec"),
        });
        return path;
    }
}
