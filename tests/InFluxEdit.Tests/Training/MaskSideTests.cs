using InFluxEdit.Cli.Commands;
using InFluxEdit.Fill;
using InFluxEdit.Models;
using InFluxEdit.Runtime.SafeTensors;
using Shouldly;

namespace InFluxEdit.Tests.Training;

/// <summary>--mask-side both: concat examples mask either half of the diptych, drawn from the run's seed.</summary>
public class MaskSideTests
{
    private static Dictionary<string, float[]> Train(TempDir dir, string output, string? maskSide, string log = "")
    {
        var options = TrainCommandTests.Options(dir, output, EditMethod.Concat, 6);
        options.TrainImgIn = false;
        options.MaskSide = maskSide;
        options.ExportDType = "f32";
        var writer = new StringWriter();
        TrainCommand.Run(options, writer, ModelCatalog.All).ShouldBe(0, writer.ToString());
        using var file = SafeTensorsFile.Open(TrainCommand.LoraPath(options));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadFloat32(t.Name).Data);
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
