using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>
/// --seed-frozen-img-in: img_in's never-zeroed gradient enters the clipping's norm and nothing else, as in the seed's
/// train_influxedit.py (x_embedder made trainable after the optimizer was built; clip_grad_norm_ over every
/// transformer parameter).
/// </summary>
public class SeedFrozenImgInTests
{
    private static Dictionary<string, float[]> Train(TempDir dir, string output, bool seedFrozen, double maxGradNorm)
    {
        var options = TrainCommandTests.Options(dir, output, EditMethod.Channel, 6);
        options.TrainImgIn = false;
        options.SeedFrozenImgIn = seedFrozen;
        options.MaxGradNorm = maxGradNorm;
        return TrainCommandTests.TrainAndReadLora(options);
    }

    [Fact]
    public void TheFrozenGradientChangesTheAdaptersOnlyThroughTheClipping()
    {
        using var dir = new TempDir();
        // No clipping: the adapters train exactly as without it, and img_in is not exported (never trained).
        var plain = Train(dir, "plain", seedFrozen: false, maxGradNorm: 0);
        var frozen = Train(dir, "frozen", seedFrozen: true, maxGradNorm: 0);
        frozen.Keys.ShouldBe(plain.Keys, ignoreOrder: true);
        frozen.Keys.ShouldNotContain(k => k.Contains("img_in", StringComparison.Ordinal));
        foreach (var (name, values) in plain) frozen[name].ShouldBe(values, name);

        // Clipped every step: the pile-up enters the norm and the adapters come out otherwise.
        var plainClipped = Train(dir, "plain-clipped", seedFrozen: false, maxGradNorm: 1e-3);
        var frozenClipped = Train(dir, "frozen-clipped", seedFrozen: true, maxGradNorm: 1e-3);
        frozenClipped.ShouldContain(p => p.Value.Where((v, i) => Math.Abs(v - plainClipped[p.Key][i]) > 1e-7).Any());
    }

    [Fact]
    public void ItCannotBeCombinedWithTrainingImgIn()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 2);
        options.SeedFrozenImgIn = true;
        Should.Throw<ArgumentException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message
            .ShouldBe("--train-img-in trains img_in; the seed's frozen img_in leaves it untrained: give one of them");
    }
}
