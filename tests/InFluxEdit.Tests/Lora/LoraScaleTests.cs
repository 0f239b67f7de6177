using InFluxEdit.Runtime.Lora;
using Shouldly;

namespace InFluxEdit.Tests.Lora;

public class LoraScaleTests
{
    [Fact]
    public void ScalesGoToTheFilesInOrderAndTheRestGetOne() =>
        LoraSet.ScalesFor(3, [0.5f, 2f]).ShouldBe([0.5f, 2f, 1f]);

    [Fact]
    public void MoreScalesThanFilesAreRefused() =>
        Should.Throw<ArgumentException>(() => LoraSet.ScalesFor(1, [0.5f, 2f])).Message.ShouldBe("2 --lora-scale values for 1 LoRA files");
}
