using InFluxEdit.Fill;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Fill;

/// <summary>The concat conditioning the other way round (the seed's training without --mask_only_right).</summary>
public class ReversedDiptychTests
{
    /// <summary>A stand-in encoder: each of 16 channels the mean of one image channel over an 8×8 block.</summary>
    private static HostTensor BlockMeans(HostTensor image)
    {
        int height = image.Shape[2] / 8, width = image.Shape[3] / 8, imageWidth = image.Shape[3], plane = image.Shape[2] * imageWidth;
        var latent = new HostTensor(1, 16, height, width);
        for (int c = 0; c < 16; c++)
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++)
                {
                    double sum = 0;
                    for (int dy = 0; dy < 8; dy++)
                        for (int dx = 0; dx < 8; dx++) sum += image.Data[(c % 3) * plane + (8 * y + dy) * imageWidth + 8 * x + dx];
                    latent.Data[(c * height + y) * width + x] = (float)(sum / 64);
                }
        return latent;
    }

    private static HostTensor Image(int seed)
    {
        var random = new Random(seed);
        var image = new HostTensor(1, 3, 32, 48);
        for (int i = 0; i < image.Data.Length; i++) image.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return image;
    }

    [Fact]
    public void TheLeftHalfIsMaskedAndBlankedAndTheTargetStaysOnTheRight()
    {
        var source = Image(1);
        var target = Image(2);
        var reversed = FillConditioning.ForConcatReversed(source, target, BlockMeans);

        // Built by hand: [blank | target], the mask 1 on the left half and 0 on the right.
        int height = 32, half = 48;
        var expectedImage = new HostTensor(1, 3, height, 2 * half);
        var expectedMask = new HostTensor(1, 1, height, 2 * half);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < height; y++)
                for (int x = 0; x < half; x++)
                {
                    expectedImage.Data[(c * height + y) * 2 * half + half + x] = target.Data[(c * height + y) * half + x];
                    expectedMask.Data[y * 2 * half + x] = 1;
                }
        var expected = LatentPacking.ConcatFeatures(LatentPacking.Pack(BlockMeans(expectedImage)), LatentPacking.PackMask(expectedMask));
        reversed.ImgCond.Shape.ShouldBe(expected.Shape);
        for (int i = 0; i < expected.Data.Length; i++) reversed.ImgCond.Data[i].ShouldBe(expected.Data[i], 1e-6f);

        // The same tokens and ids as the usual conditioning, with the opposite mask.
        var usual = FillConditioning.ForConcat(source, BlockMeans);
        reversed.ImgIds.Data.ShouldBe(usual.ImgIds.Data);
        int features = usual.ImgCond.Shape[2];
        for (int token = 0; token < usual.Tokens; token++)
            for (int f = 64; f < features; f++)
                (reversed.ImgCond.Data[token * features + f] + usual.ImgCond.Data[token * features + f]).ShouldBe(1f);
    }
}
