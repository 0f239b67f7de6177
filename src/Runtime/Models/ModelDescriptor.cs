using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Models;

// Placeholder signatures to be replaced by the safetensors/weights work (same records).
public sealed record ParameterInfo(string Name, int[] Shape, DType DType);

public sealed record ModelDescriptor(
    string Name, string SchemaFile, string Family, IReadOnlyDictionary<string, string> Params, IReadOnlyList<ParameterInfo> Parameters);
