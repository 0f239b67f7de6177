using InFluxEdit.Fill;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Numerics;
using InFluxEdit.Runtime.Sampling;
using InFluxEdit.Runtime.Tensors;
using Shouldly;

namespace InFluxEdit.Tests.Fill;

/// <summary>Packing against the reference's own packed tensors (golden fill and methods cases), and round trips.</summary>
public class LatentPackingTests
{
    [Fact]
    public void PackingTheNoiseGivesTheReferencesPackedNoise()
    {
        var packed = LatentPacking.Pack(FillGolden.Read("fill-tiny-case.safetensors", "noise"));
        var expected = FillGolden.Read("fill-tiny-case.safetensors", "expected.img");
        packed.Shape.ShouldBe(expected.Shape);
        packed.Data.ShouldBe(expected.Data);
    }

    [Fact]
    public void UnpackingTheReferenceLatentGivesTheReferencesUnpackedLatent()
    {
        var unpacked = LatentPacking.Unpack(FillGolden.Read("fill-tiny-case.safetensors", "expected.latent"), 6, 8);
        var expected = FillGolden.Read("fill-tiny-case.safetensors", "expected.unpacked");
        unpacked.Shape.ShouldBe(expected.Shape);
        unpacked.Data.ShouldBe(expected.Data);
    }

    [Fact]
    public void TheFillMaskPacksToTheReferencesMaskFeatures()
    {
        var mask = ImageFile.LoadMask(TestPaths.Golden("fill-tiny-mask.png"));
        var expected = FillGolden.Features(FillGolden.Read("fill-tiny-case.safetensors", "expected.img_cond"), 64, 256);
        var packed = LatentPacking.PackMask(mask);
        packed.Shape.ShouldBe(expected.Shape);
        TensorComparison.RelativeL2(packed.Data, expected.Data).ShouldBeLessThan(1e-6);
    }

    [Fact]
    public void ImageIdsAreTheReferencesRowColumnGrid()
    {
        LatentPacking.ImageIds(3, 4).Data.ShouldBe(FillGolden.Read("fill-tiny-case.safetensors", "expected.img_ids").Data);
        LatentPacking.ImageIds(3, 4).Data.ShouldBe(FillGolden.Read("methods-tiny-case.safetensors", "expected.channel.img_ids").Data);
        LatentPacking.ImageIds(3, 8).Data.ShouldBe(FillGolden.Read("methods-tiny-case.safetensors", "expected.concat.img_ids").Data);
    }

    [Fact]
    public void TheMethodsMasksPackToTheReferencesMaskFeatures()
    {
        // channel: all white over 48×64; concat: the right half of the 48×128 diptych.
        var channel = FillGolden.Features(FillGolden.Read("methods-tiny-case.safetensors", "expected.channel.img_cond"), 64, 256);
        channel.Data.ShouldAllBe(v => v == 1f);
        var concat = FillGolden.Features(FillGolden.Read("methods-tiny-case.safetensors", "expected.concat.img_cond"), 64, 256);
        LatentPacking.PackMask(FillConditioning.RightHalfMask(48, 64)).Data.ShouldBe(concat.Data);
    }

    [Fact]
    public void UnpackUndoesPack()
    {
        var latent = GaussianNoise.Create(5, 2, 16, 6, 10);
        var packed = LatentPacking.Pack(latent);
        packed.Shape.ShouldBe(new[] { 2, 15, 64 });
        LatentPacking.Unpack(packed, 6, 10).Data.ShouldBe(latent.Data);
    }

    [Fact]
    public void PackRejectsOddLatents() =>
        Should.Throw<ArgumentException>(() => LatentPacking.Pack(new HostTensor(1, 16, 5, 4))).Message.ShouldContain("even");
}
