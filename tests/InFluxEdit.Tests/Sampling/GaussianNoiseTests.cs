using InFluxEdit.Runtime.Sampling;
using Shouldly;

namespace InFluxEdit.Tests.Sampling;

public class GaussianNoiseTests
{
    [Fact]
    public void SameSeedGivesTheSameTensor()
    {
        var first = GaussianNoise.Create(42, 1, 16, 64, 64);
        var second = GaussianNoise.Create(42, 1, 16, 64, 64);
        first.Data.ShouldBe(second.Data);
    }

    [Fact]
    public void OtherSeedsGiveOtherNoise()
    {
        var first = GaussianNoise.Create(1, 1000);
        var second = GaussianNoise.Create(2, 1000);
        first.Data.Zip(second.Data).Count(p => p.First == p.Second).ShouldBeLessThan(5);
    }

    [Fact]
    public void AShorterTensorIsAPrefixOfALongerOne()
    {
        // Element i depends on (seed, i) only: odd lengths and chunking across threads do not change values.
        var shortNoise = GaussianNoise.Create(7, 12_345);
        var longNoise = GaussianNoise.Create(7, 200_000);
        longNoise.Data.Take(12_345).ShouldBe(shortNoise.Data);
    }

    [Fact]
    public void MomentsAreThoseOfAStandardNormal()
    {
        // n = 1e6 draws: the standard error of the mean is 1e-3, of the variance about 1.4e-3; bounds at ~5 sigma.
        var data = GaussianNoise.Create(123, 1_000_000).Data;
        double mean = data.Average(v => (double)v);
        double variance = data.Average(v => ((double)v - mean) * ((double)v - mean));
        double fourth = data.Average(v => Math.Pow(v - mean, 4));
        mean.ShouldBe(0, 0.005);
        variance.ShouldBe(1, 0.008);
        (fourth / (variance * variance)).ShouldBe(3, 0.05); // kurtosis of a normal
        // P(|z| > 3) = 0.0027 for a standard normal.
        (data.Count(v => Math.Abs(v) > 3) / 1e6).ShouldBe(0.0027, 0.0003);
    }
}
