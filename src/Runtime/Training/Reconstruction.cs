using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

/// <summary>
/// Reconstruction training of an autoencoder compiled with an encode and a decode entry (the decode entry listing its
/// latent in "input_gradients"): loss = mean((decode(encode(x)) − x)²). The two generated training passes nest: the
/// encoder's pass asks its output gradient of a callback that runs the decoder's pass with the pixel loss and returns
/// the decoder's dLatent, so the encoder's backward continues from it. Gradients add into the model's TrainingState
/// (e.g. <see cref="FullWeightTraining"/>).
/// </summary>
public static class Reconstruction
{
    /// <summary>One forward and backward pass on a batch of images; returns the mean squared error.</summary>
    public static double ForwardBackward(CompiledModel autoencoder, DeviceTensor images, string encode = "encode", string decode = "decode")
    {
        var backend = autoencoder.Backend;
        string imageName = SingleInput(autoencoder, encode);
        string latentName = SingleInput(autoencoder, decode);
        var target = backend.Download(images, images.Shape);
        double loss = double.NaN;
        autoencoder.ForwardBackward(encode, new Dictionary<string, DeviceTensor> { [imageName] = images }, latent =>
        {
            var inputGradients = new Dictionary<string, DeviceTensor>(StringComparer.Ordinal);
            autoencoder.ForwardBackward(decode, new Dictionary<string, DeviceTensor> { [latentName] = latent }, output =>
            {
                var (value, gradient) = MeanSquaredError(backend.Download(output, output.Shape), target);
                loss = value;
                return backend.Upload(gradient);
            }, inputGradients);
            return inputGradients.TryGetValue(latentName, out var dLatent)
                ? dLatent
                : throw new InvalidOperationException($"{autoencoder.Info.Name}: entry '{decode}' hands back no gradient of '{latentName}' (list it in the entry's \"input_gradients\")");
        });
        return loss;
    }

    /// <summary>The mean squared error of a reconstruction and the loss's gradient with respect to it, 2(y − x)/N.</summary>
    public static (double Loss, HostTensor Gradient) MeanSquaredError(HostTensor reconstruction, HostTensor target)
    {
        if (!reconstruction.Shape.AsSpan().SequenceEqual(target.Shape))
            throw new ArgumentException($"reconstruction {HostTensor.FormatShape(reconstruction.Shape)} and images {HostTensor.FormatShape(target.Shape)} differ");
        var gradient = new HostTensor((int[])target.Shape.Clone());
        double sum = 0, n = target.Data.Length;
        for (int i = 0; i < target.Data.Length; i++)
        {
            double d = (double)reconstruction.Data[i] - target.Data[i];
            sum += d * d;
            gradient.Data[i] = (float)(2 * d / n);
        }
        return (sum / n, gradient);
    }

    private static string SingleInput(CompiledModel model, string entry)
    {
        var found = model.Entries.FirstOrDefault(e => e.Name == entry)
            ?? throw new ArgumentException($"{model.Info.Name} has no entry '{entry}' (it has {string.Join(", ", model.Entries.Select(e => e.Name))})");
        return found.InputNames.Count == 1 ? found.InputNames[0]
            : throw new ArgumentException($"{model.Info.Name}: entry '{entry}' takes {found.InputNames.Count} inputs; reconstruction needs one");
    }
}
