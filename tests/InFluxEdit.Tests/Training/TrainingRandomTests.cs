using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class TrainingRandomTests
{
    [Fact]
    public void Xoshiro256StarStar_matches_the_published_algorithm_from_state_1_2_3_4()
    {
        // Computed by a direct Python transcription of Vigna's xoshiro256starstar.c (next()) from s = {1, 2, 3, 4}.
        ulong[] expected = [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360, 607988272756665600];
        var random = TrainingRandom.FromState(1, 2, 3, 4);
        foreach (ulong value in expected) random.NextUInt64().ShouldBe(value);
    }

    [Fact]
    public void A_restored_state_continues_the_same_stream()
    {
        var original = new TrainingRandom(1234);
        for (int i = 0; i < 17; i++) original.NextGaussian();
        var restored = TrainingRandom.RestoreState(original.SaveState());
        for (int i = 0; i < 50; i++) restored.NextUInt64().ShouldBe(original.NextUInt64());
    }

    [Fact]
    public void Corrupt_state_text_is_refused()
    {
        Should.Throw<FormatException>(() => TrainingRandom.RestoreState("mt19937:1:2"));
        Should.Throw<ArgumentException>(() => TrainingRandom.RestoreState("xoshiro256**:0:0:0:0"));
    }

    [Fact]
    public void Shuffle_is_a_permutation_and_depends_on_the_seed()
    {
        var a = Enumerable.Range(0, 100).ToList();
        var b = Enumerable.Range(0, 100).ToList();
        new TrainingRandom(1).Shuffle(a);
        new TrainingRandom(2).Shuffle(b);
        a.Order().ShouldBe(Enumerable.Range(0, 100));
        a.ShouldNotBe(b);
    }

    [Fact]
    public void Gaussians_have_unit_variance_and_uniforms_stay_in_range()
    {
        var random = new TrainingRandom(7);
        var values = new float[200_000];
        random.FillGaussian(values);
        double mean = values.Average(v => (double)v);
        double variance = values.Average(v => (v - mean) * (v - mean));
        mean.ShouldBe(0, 0.01);
        variance.ShouldBe(1, 0.02);
        for (int i = 0; i < 10_000; i++)
        {
            double u = random.NextDouble();
            (u >= 0 && u < 1).ShouldBeTrue();
            random.NextInt(3).ShouldBeInRange(0, 2);
        }
    }
}
