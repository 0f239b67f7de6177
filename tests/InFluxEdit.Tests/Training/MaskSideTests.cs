using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>--mask-side both: concat examples mask either half of the diptych, drawn from the run's seed.</summary>
public class MaskSideTests
{
    private static Dictionary<string, float[]> Train(TempDir dir, string output, string? maskSide)
    {
        var options = TrainCommandTests.Options(dir, output, EditMethod.Concat, 6);
        options.TrainImgIn = false;
        options.MaskSide = maskSide;
        return TrainCommandTests.TrainAndReadLora(options);
    }

    [Fact]
    public void BothSidesTrainsOtherAdaptersThanTheRightHalfAloneAndRepeatsWithItsSeed()
    {
        using var dir = new TempDir();
        var right = Train(dir, "right", null);
        var both = Train(dir, "both", "both");
        var again = Train(dir, "again", "both");
        foreach (var (name, values) in both) again[name].ShouldBe(values, name);
        both.ShouldContain(p => p.Value.Where((v, i) => Math.Abs(v - right[p.Key][i]) > 1e-6).Any());
    }

    [Fact]
    public void BothSidesIsForConcatOnly()
    {
        using var dir = new TempDir();
        var options = TrainCommandTests.Options(dir, "out", EditMethod.Channel, 2);
        options.MaskSide = "both";
        Should.Throw<ArgumentException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message
            .ShouldBe("--mask-side both applies to --method concat only");
        options.MaskSide = "left";
        Should.Throw<ArgumentException>(() => TrainCommand.Run(options, TextWriter.Null, ModelCatalog.All)).Message
            .ShouldBe("--mask-side must be right or both, not 'left'");
    }
}
