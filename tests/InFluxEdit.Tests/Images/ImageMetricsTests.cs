using Shouldly;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Tests.Images;

public sealed class ImageMetricsTests
{
    private static HostTensor Constant(int height, int width, float value)
    {
        var image = new HostTensor(1, 3, height, width);
        Array.Fill(image.Data, value);
        return image;
    }

    private static HostTensor Noise(int height, int width, int seed)
    {
        var random = new Random(seed);
        var image = new HostTensor(1, 3, height, width);
        for (int i = 0; i < image.Data.Length; i++) image.Data[i] = (float)(random.NextDouble() * 2 - 1);
        return image;
    }

    [Fact]
    public void Psnr_of_a_uniform_offset_is_ten_log10_of_one_over_its_square()
    {
        // An offset of 0.2 in [−1, 1] is 0.1 on the [0, 1] scale: MSE 0.01, PSNR 20 dB.
        var target = Constant(8, 12, -0.5f);
        var result = Constant(8, 12, -0.3f);
        Assert.Equal(20.0, ImageMetrics.Psnr(result, target), 4);
        Assert.Equal(double.PositiveInfinity, ImageMetrics.Psnr(target, target));
    }

    [Fact]
    public void Ssim_of_constant_images_is_the_luminance_term_alone()
    {
        // Both variances and the covariance are zero, so SSIM = (2μxμy + C1)/(μx² + μy² + C1) in closed form.
        var result = Constant(16, 16, 0.2f);  // 0.6 on [0, 1]
        var target = Constant(16, 16, -0.4f); // 0.3
        double mx = 0.6, my = 0.3, c1 = 1e-4;
        double expected = (2 * mx * my + c1) / (mx * mx + my * my + c1);
        Assert.Equal(expected, ImageMetrics.Ssim(result, target), 5);
    }

    [Fact]
    public void Ssim_is_one_for_equal_images_symmetric_and_lower_for_noise()
    {
        var a = Noise(20, 24, 1);
        var b = Noise(20, 24, 2);
        Assert.Equal(1.0, ImageMetrics.Ssim(a, a), 10);
        Assert.Equal(ImageMetrics.Ssim(a, b), ImageMetrics.Ssim(b, a), 10);
        Assert.True(ImageMetrics.Ssim(a, b) < 0.1);
    }

    [Fact]
    public void Images_of_different_sizes_are_refused_with_both_shapes()
    {
        var error = Assert.Throws<ArgumentException>(() => ImageMetrics.Psnr(Constant(8, 8, 0), Constant(8, 16, 0)));
        Assert.Contains("[1, 3, 8, 8]", error.Message);
        Assert.Contains("[1, 3, 8, 16]", error.Message);
    }

    [Fact]
    public void Mean_colour_averages_only_the_selected_pixels_in_8_bit_levels()
    {
        var image = Constant(4, 4, -1f);
        image.Data[5] = 1f; // pixel (1, 1): red channel at 255
        var mean = ImageMetrics.MeanColour(image, (y, x) => y == 1 && x <= 1)!.Value;
        Assert.Equal(127.5, mean.R, 6);
        Assert.Equal(0, mean.G, 6);
        Assert.Null(ImageMetrics.MeanColour(image, (_, _) => false));
    }

    [Fact]
    public void The_edit_region_psnr_counts_only_the_pixels_the_target_changes()
    {
        // A 4×4 source; the target changes the left column by 0.5 (0.25 on [0, 1]) and one more pixel by 0.04 (0.02:
        // under the 1/32 threshold, so not part of the edit). The result is off by 0.2 (0.1) inside the left column and
        // by 0.6 elsewhere: the region's PSNR must see only the 0.1 error, 20 dB.
        var source = Constant(4, 4, 0f);
        var target = Constant(4, 4, 0f);
        var result = Constant(4, 4, 0f);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++)
                {
                    int i = c * 16 + y * 4 + x;
                    target.Data[i] = x == 0 ? 0.5f : (x == 3 && y == 3 ? 0.04f : 0f);
                    result.Data[i] = target.Data[i] + (x == 0 ? 0.2f : 0.6f);
                }

        var region = ImageMetrics.ChangedPixels(source, target);

        region.ShouldBe(Enumerable.Range(0, 16).Select(p => p % 4 == 0).ToArray());
        ImageMetrics.Psnr(result, target, region)!.Value.ShouldBe(20.0, 1e-4);
        ImageMetrics.Psnr(result, target, new bool[16]).ShouldBeNull();
        ImageMetrics.Psnr(result, target, null)!.Value.ShouldBe(ImageMetrics.Psnr(result, target));
    }
}
