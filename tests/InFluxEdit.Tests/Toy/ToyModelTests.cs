using InFluxEdit.Training;
using InFluxEdit.Cli.Commands;
using InFluxEdit.Datasets;
using InFluxEdit.Fill;
using InFluxEdit.Text;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Backends.Cpu;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;
using Xunit.Abstractions;

namespace InFluxEdit.Tests.Toy;

/// <summary>
/// The shipped toy base (models/toy), measured as the README states it. The bars sit under what the shipped weights
/// reach here, so a regression in the weights, the pipeline or the kernels shows; other CPUs round differently, hence
/// the margin.
/// </summary>
public sealed class ToyModelTests(ITestOutputHelper output)
{
    /// <summary>The shipped base reaches 77 % here (chance: about 12 %; the background colour everywhere: about 50 %).</summary>
    private const double InpaintingBar = 0.70;

    private static string ToyFolder => Path.Combine(TestPaths.RepoRoot, "models", "toy");

    /// <summary>
    /// Inpainting scenes it never saw (another seed than its pretraining): inside each mask, the share of pixels whose
    /// nearest palette colour is the original scene's. Chance is about 1/8 (eight colours); a model that paints the
    /// background colour everywhere gets about 1/2, the background being most of a scene.
    /// </summary>
    [Fact]
    public void The_toy_base_inpaints_held_out_scenes_with_the_colours_their_captions_name()
    {
        const int size = 64;
        var random = new TrainingRandom(987_654);
        var scenes = Enumerable.Range(0, 24).Select(_ => ShapeScenes.Draw(random, size)).ToList();
        using var toy = new ShippedToy(scenes.Select(s => s.Caption));
        var (pipeline, texts) = (toy.Pipeline, toy.Texts);

        long right = 0, masked = 0;
        int plane = size * size;
        for (int index = 0; index < scenes.Count; index++)
        {
            var scene = scenes[index];
            var result = pipeline.Edit(new FillEditRequest(scene.Image, scene.Mask, EditMethod.Fill, texts[scene.Caption], Steps: 20,
                Guidance: ToyBase.ToyGuidance, Seed: index)).Image;
            for (int p = 0; p < plane; p++)
            {
                if (scene.Mask.Data[p] < 0.5f) continue;
                masked++;
                if (NearestAt(result, p, plane) == NearestAt(scene.Image, p, plane)) right++;
            }
        }
        double share = (double)right / masked;
        output.WriteLine($"masked pixels with the scene's colour: {share:P1} of {masked}");
        share.ShouldBeGreaterThan(InpaintingBar);
    }

    /// <summary>
    /// Prompts matter: the whole picture masked, so only the caption can say the colours. In no sample of four noise
    /// seeds may the other caption's fill colour cover more of the picture than the caption's own, and over the four
    /// the caption's own must cover more. One seed alone decides too little: a sample may hold no shape at all (the base
    /// trained on 2:1 canvases too leaves it out in 5 of 32 such samples, the square-only base in 2), but none has been
    /// drawn in the other caption's colour.
    /// </summary>
    [Fact]
    public void Colour_words_in_the_caption_change_the_fill()
    {
        const int size = 64;
        int[] seeds = [1, 2, 3, 4];
        (string Fill, string Other)[] pairs = [("red", "yellow"), ("green", "violet"), ("blue", "orange"), ("pink", "cyan")];
        using var toy = new ShippedToy(pairs.SelectMany(p => new[] { Caption(p.Fill, p), Caption(p.Other, p) }));
        var (pipeline, texts) = (toy.Pipeline, toy.Texts);
        var image = new HostTensor(1, 3, size, size);
        var mask = new HostTensor(1, 1, size, size);
        Array.Fill(mask.Data, 1f);

        foreach (var pair in pairs)
            foreach (var (own, other) in new[] { (pair.Fill, pair.Other), (pair.Other, pair.Fill) })
            {
                string caption = Caption(own, pair);
                // One edit per seed; the pixels nearest the caption's colour and the other caption's colour.
                var counts = seeds.Select(seed =>
                {
                    var result = pipeline.Edit(new FillEditRequest(image, mask, EditMethod.Fill, texts[caption], Steps: 20,
                        Guidance: ToyBase.ToyGuidance, Seed: seed)).Image;
                    var nearest = Enumerable.Range(0, size * size).Select(p => NearestAt(result, p, size * size)).ToList();
                    return (Own: nearest.Count(c => c == own), Other: nearest.Count(c => c == other));
                }).ToList();
                output.WriteLine($"{caption}: {string.Join(", ", counts.Select(c => $"{c.Own} {own} / {c.Other} {other}"))}");
                foreach (var (count, seed) in counts.Zip(seeds))
                    count.Own.ShouldBeGreaterThanOrEqualTo(count.Other, $"{caption}, seed {seed}");
                counts.Sum(c => c.Own).ShouldBeGreaterThan(counts.Sum(c => c.Other), caption);
            }
    }

    /// <summary>A circle of <paramref name="fill"/> on a background colour that is neither of the pair's fill colours.</summary>
    private static string Caption(string fill, (string Fill, string Other) pair) =>
        $"{fill} circle with {CirclesDataset.Palette.Select(c => c.Name).First(name => name != pair.Fill && name != pair.Other)} background";

    /// <summary>The README's main command as it runs there: a method-(b) LoRA on the shipped base, scored on held-out circles.</summary>
    [Fact]
    public void The_demo_paints_at_least_80_percent_of_held_out_circles_in_both_caption_colours()
    {
        using var dir = new TempDir();
        var log = new StringWriter();
        DemoCommand.Run(new DemoOptions { Output = dir.Path, FluxDir = ToyFolder, Device = "cpu" }, log, out var score).ShouldBe(0, log.ToString());
        output.WriteLine(log.ToString().Split('\n').Last(line => line.StartsWith("held-out edits", StringComparison.Ordinal)));
        ((double)score.Colours.Both / score.Count).ShouldBeGreaterThanOrEqualTo(0.8);
    }

    /// <summary>
    /// A pipeline that loads its transformer for each edit's sampling (as edit does, so neither the encode nor the decode
    /// sits beside the weights) loads it once per edit, frees it before the decode, and gives the same image as one that
    /// keeps the transformer loaded.
    /// </summary>
    [Fact]
    public void A_pipeline_that_loads_its_transformer_for_sampling_gives_the_same_image()
    {
        var scene = ShapeScenes.Draw(new TrainingRandom(31), 32);
        using var toy = new ShippedToy([scene.Caption]);
        var request = new FillEditRequest(scene.Image, scene.Mask, EditMethod.Fill, toy.Texts[scene.Caption], Steps: 2, Guidance: ToyBase.ToyGuidance, Seed: 5);
        var kept = toy.Pipeline.Edit(request).Image;
        var loads = new List<LoadedModel>();
        var loading = toy.PipelineLoadingTransformer(loads);
        loading.Edit(request).Image.Data.ShouldBe(kept.Data);
        loading.Edit(request).Image.Data.ShouldBe(kept.Data);
        loads.Count.ShouldBe(2);
        foreach (var loaded in loads)
            Should.Throw<ObjectDisposedException>(() => toy.Backend.Download(loaded.Weights["img_in.weight"], loaded.Weights["img_in.weight"].Shape), "freed before the decode");
    }

    /// <summary>The shipped toy on the CPU, with the captions' encodings (cached in a temporary folder).</summary>
    private sealed class ShippedToy : IDisposable
    {
        private readonly TempDir _cache = new();
        private readonly CpuBackend _backend = new();
        private readonly LoadedModel _transformer, _vae;

        public ShippedToy(IEnumerable<string> captions)
        {
            string transformerPath = Path.Combine(ToyFolder, ToyBase.TransformerFile);
            File.Exists(transformerPath).ShouldBeTrue($"the toy model is missing from {ToyFolder}; make it with influx-cli pretrain-toy");
            var (info, reason) = LoadedModel.Resolve(transformerPath, FillPipeline.TransformerFamily, ModelCatalog.All);
            Texts = CaptionEncodings.Encode(captions.Distinct().ToList(), new TextEncoderSettings { FluxDir = ToyFolder }, info.Descriptor, _cache.Path,
                _backend, ModelCatalog.All, TextWriter.Null);
            _transformer = LoadedModel.Load(transformerPath, info, reason, _backend);
            _vae = LoadedModel.Load(Path.Combine(ToyFolder, FluxModelFolder.AutoencoderFile), VaeCodec.Family, _backend, ModelCatalog.All);
            Pipeline = new FillPipeline(_transformer.Model, _vae.Model);
        }

        public FillPipeline Pipeline { get; }

        public CpuBackend Backend => _backend;

        /// <summary>A pipeline over the same VAE that loads the toy transformer again for each edit, adding each load to <paramref name="loads"/>.</summary>
        public FillPipeline PipelineLoadingTransformer(List<LoadedModel> loads) => FillPipeline.LoadingTransformerForSampling(_transformer.Model.Info, () =>
        {
            string path = Path.Combine(ToyFolder, ToyBase.TransformerFile);
            var (info, reason) = LoadedModel.Resolve(path, FillPipeline.TransformerFamily, ModelCatalog.All);
            loads.Add(LoadedModel.Load(path, info, reason, _backend));
            return loads[^1];
        }, _vae.Model);
        public IReadOnlyDictionary<string, TextConditioning> Texts { get; }

        public void Dispose()
        {
            _vae.Dispose();
            _transformer.Dispose();
            _backend.Dispose();
            _cache.Dispose();
        }
    }

    private static string NearestAt(HostTensor image, int p, int plane) =>
        CirclesDataset.Nearest(((image.Data[p] + 1) * 127.5, (image.Data[plane + p] + 1) * 127.5, (image.Data[2 * plane + p] + 1) * 127.5)).Name;
}
