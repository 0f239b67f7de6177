using InFluxEdit.Training;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Training;

public class PairDatasetTests
{
    private static void Image(string path, int width, int height, float value = 0f)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var image = new HostTensor(1, 3, height, width);
        Array.Fill(image.Data, value);
        ImageFile.SaveRgb(image, path);
    }

    private static string Folder(TempDir dir, bool captionsFolder = true)
    {
        foreach (string name in new[] { "a", "b" })
        {
            Image(dir.File($"source/{name}.png"), 32, 48);
            Image(dir.File($"target/{name}.jpg"), 32, 48, 0.5f);
            string caption = captionsFolder ? dir.File($"captions/{name}.txt") : dir.File($"source/{name}.txt");
            Directory.CreateDirectory(Path.GetDirectoryName(caption)!);
            File.WriteAllText(caption, $"make {name} red\n");
        }
        return dir.Path;
    }

    [Fact]
    public void The_instance_prompt_stands_in_for_a_missing_or_empty_caption()
    {
        using var dir = new TempDir();
        Folder(dir, captionsFolder: true);
        File.Delete(dir.File("captions/a.txt"));
        Should.Throw<PairDatasetException>(() => PairDataset.FromFolder(dir.Path)).Message.ShouldContain("--instance-prompt");
        File.WriteAllText(dir.File("captions/b.txt"), "  \n");
        var data = PairDataset.FromFolder(dir.Path, instancePrompt: "make it blue");
        data.Pairs.Select(p => p.Caption).ShouldBe(["make it blue", "make it blue"]);
        File.WriteAllText(dir.File("captions/b.txt"), "make b red");
        PairDataset.FromFolder(dir.Path, instancePrompt: "make it blue").Pairs[1].Caption.ShouldBe("make b red", "a caption of its own wins");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Pairs_are_found_with_captions_in_either_place(bool captionsFolder)
    {
        using var dir = new TempDir();
        var data = PairDataset.FromFolder(Folder(dir, captionsFolder));
        data.Pairs.Select(p => p.Name).ShouldBe(["a", "b"]);
        data.Pairs[1].Caption.ShouldBe("make b red");
        (data.Pairs[0].Width, data.Pairs[0].Height).ShouldBe((32, 48));
        var (source, target) = PairDataset.Load(data.Pairs[0], new Bucket(32, 48));
        source.Shape.ShouldBe([1, 3, 48, 32]);
        target.Data[0].ShouldBe(0.5f, 0.01f);
    }

    [Fact]
    public void The_seeds_separate_folders_and_combined_diptychs_are_read()
    {
        using var dir = new TempDir();
        Folder(dir);
        PairDataset.FromSeparateFolders(dir.File("source"), dir.File("target"), dir.File("captions")).Pairs.Count.ShouldBe(2);

        Image(dir.File("combined/x.png"), 64, 32);
        File.WriteAllText(dir.File("combined/x.txt"), "edit");
        var pair = PairDataset.FromCombined(dir.File("combined")).Pairs.Single();
        (pair.Width, pair.Height, pair.Combined).ShouldBe((32, 32, true));
        PairDataset.Load(pair, new Bucket(32, 32)).Target.Shape.ShouldBe([1, 3, 32, 32]);
    }

    [Fact]
    public void Missing_target_is_named()
    {
        using var dir = new TempDir();
        Folder(dir);
        File.Delete(dir.File("target/b.jpg"));
        Should.Throw<PairDatasetException>(() => PairDataset.FromFolder(dir.Path)).Message.ShouldContain(Path.Combine("source", "b.png"));
    }

    [Fact]
    public void Missing_caption_is_named()
    {
        using var dir = new TempDir();
        Folder(dir);
        File.Delete(dir.File("captions/a.txt"));
        var message = Should.Throw<PairDatasetException>(() => PairDataset.FromFolder(dir.Path)).Message;
        message.ShouldContain("has no caption");
        message.ShouldContain(Path.Combine("captions", "a.txt"));
    }

    [Fact]
    public void Unreadable_image_is_named()
    {
        using var dir = new TempDir();
        Folder(dir);
        File.WriteAllText(dir.File("target/a.jpg"), "not a jpeg");
        Should.Throw<PairDatasetException>(() => PairDataset.FromFolder(dir.Path)).Message.ShouldContain(Path.Combine("target", "a.jpg"));
    }

    [Fact]
    public void Source_and_target_of_different_sizes_are_named()
    {
        using var dir = new TempDir();
        Folder(dir);
        Image(dir.File("target/b.jpg"), 48, 48);
        var message = Should.Throw<PairDatasetException>(() => PairDataset.FromFolder(dir.Path)).Message;
        message.ShouldContain(Path.Combine("target", "b.jpg"));
        message.ShouldContain("48×48");
    }

    [Fact]
    public void Buckets_are_multiples_of_16_within_the_area_and_epochs_repeat_by_seed()
    {
        var buckets = new AspectBuckets(512);
        buckets.Buckets.ShouldAllBe(b => b.Width % 16 == 0 && b.Height % 16 == 0 && (long)b.Width * b.Height <= 512L * 512);
        buckets.Assign(1000, 1000).ShouldBe(new Bucket(512, 512));
        var wide = buckets.Assign(1600, 900);
        (wide.Width > wide.Height).ShouldBeTrue();
        AspectBuckets.Fit(new HostTensor(1, 3, 900, 1600), wide).Shape.ShouldBe([1, 3, wide.Height, wide.Width]);

        using var dir = new TempDir();
        var data = PairDataset.FromFolder(Folder(dir));
        var first = data.EpochBatches(buckets, 1, new TrainingRandom(3));
        first.SelectMany(b => b).Order().ShouldBe([0, 1]);
        data.EpochBatches(buckets, 1, new TrainingRandom(3)).ShouldBe(first);
    }

    [Fact]
    public void Without_upscaling_an_image_within_the_area_keeps_its_size_and_a_larger_one_is_bucketed()
    {
        var buckets = new AspectBuckets(128, noUpscale: true);
        buckets.Assign(64, 64).ShouldBe(new Bucket(64, 64));
        buckets.Assign(128, 64).ShouldBe(new Bucket(128, 64));
        buckets.Assign(70, 40).ShouldBe(new Bucket(64, 32));
        // Above 128² pixels: the plain bucket, as without the option.
        buckets.Assign(400, 400).ShouldBe(new AspectBuckets(128).Assign(400, 400));
        new AspectBuckets(128).Assign(64, 64).ShouldBe(new Bucket(128, 128));
    }
}
