using System.Globalization;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Benchmarks;

/// <summary>Inputs of a FLUX-style transformer at a given size: random activations, a row-major id grid.</summary>
public static class BenchInputs
{
    public static Dictionary<string, HostTensor> Create(ModelDescriptor model, int batch, int imageTokens, int textTokens)
    {
        int Param(string name) => int.Parse(model.Params[name], CultureInfo.InvariantCulture);
        var random = new Random(42);
        HostTensor Random(params int[] shape)
        {
            var t = new HostTensor(shape);
            for (int i = 0; i < t.Data.Length; i++) t.Data[i] = (float)(random.NextDouble() * 2 - 1);
            return t;
        }
        int width = (int)Math.Ceiling(Math.Sqrt(imageTokens));
        var imgIds = new HostTensor(batch, imageTokens, 3);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < imageTokens; i++)
            {
                imgIds.Data[(b * imageTokens + i) * 3 + 1] = i / width;
                imgIds.Data[(b * imageTokens + i) * 3 + 2] = i % width;
            }
        var timesteps = new HostTensor(batch);
        var guidance = new HostTensor(batch);
        Array.Fill(timesteps.Data, 0.7f);
        Array.Fill(guidance.Data, 30f);
        return new Dictionary<string, HostTensor>
        {
            ["img"] = Random(batch, imageTokens, Param("in_channels")),
            ["img_ids"] = imgIds,
            ["txt"] = Random(batch, textTokens, Param("context_in_dim")),
            ["txt_ids"] = new HostTensor(batch, textTokens, 3),
            ["timesteps"] = timesteps,
            ["y"] = Random(batch, Param("vec_in_dim")),
            ["guidance"] = guidance,
        };
    }
}
