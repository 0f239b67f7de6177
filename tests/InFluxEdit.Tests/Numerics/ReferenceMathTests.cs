using InFluxEdit.Runtime.Numerics;
using Shouldly;

namespace InFluxEdit.Tests.Numerics;

public class ReferenceMathTests
{
    [Fact]
    public void ExpFloat32IsWithinOneUlpOfTheExactValue()
    {
        var random = new Random(3);
        for (int i = 0; i < 100_000; i++)
        {
            float x = (float)(random.NextDouble() * 160 - 80);
            double exact = Math.Exp(x);
            float ours = ReferenceMath.ExpFloat32(x);
            double ulp = MathF.BitIncrement((float)exact) - (float)exact;
            Math.Abs(ours - exact).ShouldBeLessThanOrEqualTo(ulp, $"exp({x:R})");
        }
    }

    [Fact]
    public void ExpFloat32HandlesTheEnds()
    {
        ReferenceMath.ExpFloat32(0f).ShouldBe(1f);
        ReferenceMath.ExpFloat32(-200f).ShouldBe(0f);
        float.IsPositiveInfinity(ReferenceMath.ExpFloat32(100f)).ShouldBeTrue();
    }

    [Fact]
    public void TimestepFrequenciesStartAtOneAndDecay()
    {
        var f = ReferenceMath.TimestepFrequencies(128, 10000f);
        f[0].ShouldBe(1f);
        for (int k = 1; k < f.Length; k++)
        {
            f[k].ShouldBeLessThan(f[k - 1]);
            f[k].ShouldBe((float)Math.Exp(-Math.Log(10000) * k / 128), 1e-6f);
        }
    }
}
