using InFluxEdit.Datasets;
using InFluxEdit.Training;
using InFluxEdit.Runtime.Images;

namespace InFluxEdit.Tests.Datasets;

public sealed class CirclesDatasetTests
{
    [Fact]
    public void A_seed_draws_the_same_samples_and_another_seed_others()
    {
        var first = CirclesDataset.Draw(12, 64, seed: 5);
        Assert.Equal(first, CirclesDataset.Draw(12, 64, seed: 5));
        Assert.NotEqual(first, CirclesDataset.Draw(12, 64, seed: 6));
        Assert.All(first, s => Assert.NotEqual(s.Fill, s.Background));
    }

    [Fact]
    public void Circles_stay_inside_the_image_with_a_margin()
    {
        foreach (var s in CirclesDataset.Draw(200, 48, seed: 3))
        {
            Assert.InRange(s.CentreX - s.Radius, 1, 47);
            Assert.InRange(s.CentreX + s.Radius, 1, 47);
            Assert.InRange(s.CentreY - s.Radius, 1, 47);
            Assert.InRange(s.CentreY + s.Radius, 1, 47);
        }
    }

    [Fact]
    public void The_targets_pixels_show_the_colours_their_caption_names()
    {
        foreach (var sample in CirclesDataset.Draw(40, 64, seed: 11))
        {
            var target = CirclesDataset.RenderTarget(sample);
            Assert.Equal($"{sample.Fill} circle with {sample.Background} background", sample.Caption);
            Assert.Equal((true, true), CirclesDataset.ScoreColours(target, sample));

            // The centre pixel is exactly the fill colour, a corner exactly the background (8-bit levels).
            var fill = CirclesDataset.Colour(sample.Fill);
            var centre = ImageMetrics.MeanColour(target, (y, x) => y == (int)sample.CentreY && x == (int)sample.CentreX)!.Value;
            Assert.Equal(fill.R, centre.R, 3);
            Assert.Equal(fill.G, centre.G, 3);
            Assert.Equal(fill.B, centre.B, 3);
        }
    }

    [Fact]
    public void The_source_is_an_outline_on_a_plain_background()
    {
        var sample = CirclesDataset.Draw(1, 64, seed: 2)[0];
        var source = CirclesDataset.RenderSource(sample);
        var centre = ImageMetrics.MeanColour(source, (y, x) => CirclesDataset.Inside(sample, x + 0.5, y + 0.5, 0.5))!.Value;
        var ring = ImageMetrics.MeanColour(source, (y, x) =>
            CirclesDataset.Inside(sample, x + 0.5, y + 0.5, 1.01) && !CirclesDataset.Inside(sample, x + 0.5, y + 0.5, 0.99));
        Assert.Equal(240, centre.R, 3);
        Assert.True(ring!.Value.R < 120, $"the outline should be dark, its mean red level is {ring.Value.R:F0}");
    }

    [Fact]
    public void A_written_split_reads_back_as_training_pairs_with_captions()
    {
        using var dir = new TempDir();
        var samples = CirclesDataset.Draw(3, 32, seed: 9);
        CirclesDataset.WriteSplit(dir.Path, samples);
        Assert.Equal(samples, CirclesDataset.ReadSplit(dir.Path));
        var pairs = PairDataset.FromFolder(dir.Path).Pairs;
        Assert.Equal(samples.Select(s => s.Caption), pairs.Select(p => p.Caption));
        Assert.All(pairs, p => Assert.Equal((32, 32), (p.Width, p.Height)));
        var target = ImageFile.LoadRgb(pairs[0].TargetPath);
        Assert.Equal((true, true), CirclesDataset.ScoreColours(target, samples[0]));
    }

    [Theory]
    [InlineData(0, 64, "--count")]
    [InlineData(4, 40, "multiple of 16")]
    public void Bad_sizes_are_refused_with_the_option_named(int count, int size, string expected)
    {
        var error = Assert.Throws<ArgumentException>(() => CirclesDataset.Draw(count, size, seed: 0));
        Assert.Contains(expected, error.Message);
    }
}

public sealed class ShapeScenesTests
{
    [Fact]
    public void Scenes_repeat_per_seed_and_their_captions_name_the_colours_drawn()
    {
        var a = new InFluxEdit.Runtime.Training.TrainingRandom(3);
        var b = new InFluxEdit.Runtime.Training.TrainingRandom(3);
        for (int i = 0; i < 30; i++)
        {
            var scene = ShapeScenes.Draw(a, 48);
            var again = ShapeScenes.Draw(b, 48);
            Assert.Equal(scene.Caption, again.Caption);
            Assert.Equal(scene.Image.Data, again.Image.Data);
            Assert.Equal(scene.Mask.Data, again.Mask.Data);

            // The colour covering most pixels is the background; the other one is the shape's.
            var words = scene.Caption.Split(' ');
            var counts = new Dictionary<string, int>();
            int plane = 48 * 48;
            for (int p = 0; p < plane; p++)
            {
                var nearest = CirclesDataset.Nearest(((scene.Image.Data[p] + 1) * 127.5, (scene.Image.Data[plane + p] + 1) * 127.5, (scene.Image.Data[2 * plane + p] + 1) * 127.5));
                counts[nearest.Name] = counts.GetValueOrDefault(nearest.Name) + 1;
            }
            var ranked = counts.OrderByDescending(c => c.Value).Select(c => c.Key).ToList();
            Assert.Equal(words[3], ranked[0]);
            Assert.Equal(words[0], ranked[1]);
            Assert.Contains(words[1], new[] { "circle", "square" });
            Assert.All(scene.Mask.Data, m => Assert.True(m is 0f or 1f));
            Assert.Contains(1f, scene.Mask.Data);
        }
    }

    [Fact]
    public void A_square_drawn_by_width_and_height_is_the_square_scene_and_wide_scenes_keep_shape_and_mask_inside()
    {
        var bySide = ShapeScenes.Draw(new InFluxEdit.Runtime.Training.TrainingRandom(5), 32);
        var byBoth = ShapeScenes.Draw(new InFluxEdit.Runtime.Training.TrainingRandom(5), 32, 32);
        Assert.Equal(bySide.Image.Data, byBoth.Image.Data);
        Assert.Equal(bySide.Mask.Data, byBoth.Mask.Data);

        var random = new InFluxEdit.Runtime.Training.TrainingRandom(6);
        for (int i = 0; i < 10; i++)
        {
            var wide = ShapeScenes.Draw(random, 64, 32);
            Assert.Equal([1, 3, 32, 64], wide.Image.Shape);
            Assert.Equal([1, 1, 32, 64], wide.Mask.Shape);
            Assert.Contains(1f, wide.Mask.Data);
            // The shape lies wholly inside: the border pixels are all the background's colour.
            var corner = (wide.Image.Data[0], wide.Image.Data[32 * 64], wide.Image.Data[2 * 32 * 64]);
            int plane = 32 * 64;
            foreach (int p in Enumerable.Range(0, 64).Concat(Enumerable.Range(0, 64).Select(x => 31 * 64 + x)))
                Assert.Equal(corner, (wide.Image.Data[p], wide.Image.Data[plane + p], wide.Image.Data[2 * plane + p]));
        }
    }

    [Theory]
    [InlineData("1:1,2:1,1:2", 3)]
    [InlineData(" 2:1 ", 1)]
    public void Scene_aspects_parse(string text, int count) => Assert.Equal(count, SceneAspect.ParseList(text).Count);

    [Theory]
    [InlineData("2:2")]
    [InlineData("3")]
    [InlineData("a:1")]
    [InlineData("5:1")]
    [InlineData(",")]
    public void Bad_scene_aspects_are_refused(string text) =>
        Assert.StartsWith("--aspects", Assert.Throws<ArgumentException>(() => SceneAspect.ParseList(text)).Message);
}
