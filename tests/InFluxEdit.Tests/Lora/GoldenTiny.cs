using InFluxEdit.Models;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Lora;

/// <summary>The golden tiny FLUX model the LoRA tests change: its descriptor, its weights (read once) and its widths.</summary>
internal static class GoldenTiny
{
    public static readonly ModelDescriptor Model = FluxFillTiny.Descriptor;

    private static readonly Lazy<Dictionary<string, HostTensor>> Weights = new(() =>
    {
        using var file = SafeTensorsFile.Open(TestPaths.Golden("flux-tiny.safetensors"));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name));
    });

    public static Dictionary<string, HostTensor> Base => Weights.Value;
    public static int Hidden => Base["img_in.weight"].Shape[0];
    public static int Mlp => Base["double_blocks.0.img_mlp.0.weight"].Shape[0];
}
