using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Quantization;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.WeightFiles;

public static class WeightFile
{
    /// <summary>Opens a GGUF file (recognised by its magic, whatever its name, or by its .gguf extension) or else a safetensors file.</summary>
    public static IWeightFile Open(string path)
    {
        IO.PathChecks.RequireFile(path, "weights file");
        return GgufFile.HasMagic(path) || IsGgufPath(path) ? GgufFile.Open(path) : SafeTensorsFile.Open(path);
    }

    /// <summary>Whether the path names a GGUF file by its extension (what writers go by).</summary>
    public static bool IsGgufPath(string path) => path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase);

    /// <summary>The tensor decoded to float32: exactly the value its format defines, times its <see cref="StoredTensor.Scale"/>.</summary>
    public static HostTensor ReadFloat32(this IWeightFile file, StoredTensor tensor)
    {
        TensorFormat format = tensor.Format ?? throw new InvalidDataException(
            $"tensor '{tensor.Name}' in '{file.Path}' holds {tensor.FormatName} values, which are not numbers a model can load.");
        var values = new float[checked((int)tensor.ElementCount)];
        TensorDecoder.Decode(format, file.GetStoredBytes(tensor), values, tensor.Scale);
        return new HostTensor((int[])tensor.Shape.Clone(), values);
    }

    public static StoredTensor Find(this IWeightFile file, string name) =>
        file.StoredTensors.FirstOrDefault(t => t.Name == name)
        ?? throw new KeyNotFoundException($"'{file.Path}' has no tensor '{name}' ({file.StoredTensors.Count} tensors in the file).");
}
