using System.Text.Json;
using InFluxEdit.Parity;

namespace InFluxEdit.Tests.Parity;

/// <summary>The bf16 bar raises tolerances tighter than it and leaves looser ones (and tokenizers' exactness) alone.</summary>
public sealed class ToleranceFloorTests
{
    private static GoldenCase Case(string json) => new("c", JsonDocument.Parse(json).RootElement.Clone());

    [Fact]
    public void TheFloorRaisesOnlyTighterTolerances()
    {
        var plain = Case("""{"kind": "flux-forward", "tolerance": {"default": 1e-4, "image": 0.05}}""");
        var floored = new GoldenCase(plain.Name, plain.Json) { ToleranceFloor = ParityRunner.BFloat16Tolerance };
        Assert.Equal(1e-4, plain.ToleranceFor("out"));
        Assert.Equal(1e-2, floored.ToleranceFor("out"));
        Assert.Equal(0.05, floored.ToleranceFor("image"));
    }
}
