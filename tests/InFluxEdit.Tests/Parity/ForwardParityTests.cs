using InFluxEdit.Parity;
using InFluxEdit.Runtime.Backends.Cpu;
using Shouldly;

namespace InFluxEdit.Tests.Parity;

/// <summary>
/// The generated FLUX transformer against the float64 reference vectors, tensor by tensor: the final
/// output, vec, pe and every block's output (float32 compute, relative L2 ≤ the manifest's tolerance).
/// </summary>
public class ForwardParityTests
{
    public static TheoryData<string> SupportedCases()
    {
        var data = new TheoryData<string>();
        foreach (var c in GoldenManifest.Load(TestPaths.GoldenDir).Cases.Where(c => ParityRunner.Kinds.ContainsKey(c.Kind)))
            data.Add(c.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(SupportedCases))]
    public void CaseMatchesTheReference(string caseName)
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find(caseName)!, outDir: null);

        rows.ShouldNotBeEmpty();
        rows.Where(r => r.Status != ParityStatus.Passed)
            .Select(r => $"{r.Tensor}: {r.Error:E2} > {r.Tolerance:E0} {r.Note}")
            .ShouldBeEmpty();
    }

    [Fact]
    public void ForwardCaseChecksEveryExpectedTensor()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        var rows = new ParityRunner(manifest, backend).Run(manifest.Find("flux-tiny-forward")!, outDir: null);

        rows.Select(r => r.Tensor).ShouldBe(new[]
        {
            "out", "vec", "pe", "double_blocks.0.img", "double_blocks.0.txt", "double_blocks.1.img", "double_blocks.1.txt",
            "single_blocks.0", "single_blocks.1",
        }, ignoreOrder: true);
    }

    [Fact]
    public void UnbuiltKindsAreSkippedNotPassed()
    {
        var manifest = GoldenManifest.Load(TestPaths.GoldenDir);
        using var backend = new CpuBackend();
        using var json = System.Text.Json.JsonDocument.Parse("{\"kind\": \"kind-from-the-future\", \"data\": \"x.safetensors\"}");
        var rows = new ParityRunner(manifest, backend).Run(new GoldenCase("future-case", json.RootElement.Clone()), outDir: null);
        rows.ShouldHaveSingleItem().Status.ShouldBe(ParityStatus.Skipped);
    }
}
