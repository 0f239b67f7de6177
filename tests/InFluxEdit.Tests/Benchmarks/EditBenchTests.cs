using InFluxEdit.Benchmarks;
using InFluxEdit.Runtime.Backends.Cpu;
using Shouldly;

namespace InFluxEdit.Tests.Benchmarks;

/// <summary>bench edit with the text encoders: the prompt's encoding feeds the edit and is part of its time.</summary>
public sealed class EditBenchTests
{
    private static readonly BenchSettings Toy = new()
    {
        Model = "flux-fill-toy", VaeModel = "flux-vae-toy", Width = 32, Height = 32, Steps = 1, TextTokens = 8,
        ClipModel = "clip-tiny", T5Model = "t5-tiny",
    };

    [Fact]
    public void TheImagesTimeIncludesEncodingThePromptWithTheNamedEncoders()
    {
        using var backend = new CpuBackend();
        var result = InFluxEdit.Benchmarks.Benchmarks.Edit(Toy, backend);
        result.TextEncoders.ShouldBe("clip-tiny + t5-tiny");
        result.TextEncodingSeconds.ShouldNotBeNull();
        result.TextEncodingSeconds.Value.ShouldBeGreaterThan(0);
        result.SecondsPerImage.ShouldBeGreaterThan(result.TextEncodingSeconds.Value);
        result.PeakDeviceBytes.ShouldNotBeNull();
    }

    [Fact]
    public void EncodersWhoseWidthsDoNotFitTheTransformerAreRefusedByName()
    {
        using var backend = new CpuBackend();
        var error = Should.Throw<InvalidDataException>(() => InFluxEdit.Benchmarks.Benchmarks.Edit(Toy with { Model = "flux-fill-tiny", VaeModel = "flux-vae-tiny" }, backend));
        error.Message.ShouldContain("bench edit's text encoders (clip-tiny, t5-tiny)");
        error.Message.ShouldContain("flux-fill-tiny needs [1, L, 48]");
    }

    [Fact]
    public void OneEncoderAloneIsRefused()
    {
        using var backend = new CpuBackend();
        Should.Throw<ArgumentException>(() => InFluxEdit.Benchmarks.Benchmarks.Edit(Toy with { T5Model = null }, backend))
            .Message.ShouldContain("give both --clip-model and --t5-model");
    }
}
