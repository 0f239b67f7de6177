using System.Text.Json;
using System.Text.RegularExpressions;
using InFluxEdit.Runtime.Sampling;
using Shouldly;

namespace InFluxEdit.Tests.Sampling;

/// <summary>The schedules against BFL's get_schedule lists in tests/golden/schedules.json.</summary>
public class FlowMatchScheduleTests
{
    public static TheoryData<string> ReferenceKeys()
    {
        var data = new TheoryData<string>();
        foreach (var key in ReadReference().Keys) data.Add(key);
        return data;
    }

    [Theory]
    [MemberData(nameof(ReferenceKeys))]
    public void MatchesTheReferenceList(string key)
    {
        var expected = ReadReference()[key];
        var parts = Regex.Match(key, @"^(\d+)x(\d+)(_noshift)?$");
        parts.Success.ShouldBeTrue($"unexpected key {key}");
        int steps = int.Parse(parts.Groups[1].Value), sequenceLength = int.Parse(parts.Groups[2].Value);

        double[] actual = parts.Groups[3].Success ? FlowMatchSchedule.Linear(steps) : FlowMatchSchedule.Shifted(steps, sequenceLength);

        actual.Length.ShouldBe(expected.Length);
        for (int i = 0; i < actual.Length; i++)
            Math.Abs(actual[i] - expected[i]).ShouldBeLessThan(1e-6, $"t[{i}] of {key}");
    }

    [Fact]
    public void RejectsZeroSteps() =>
        Should.Throw<ArgumentOutOfRangeException>(() => FlowMatchSchedule.Shifted(0, 1024)).Message.ShouldContain("at least one step");

    private static Dictionary<string, double[]> ReadReference()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(TestPaths.Golden("schedules.json")));
        return document.RootElement.GetProperty("schedules").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(v => v.GetDouble()).ToArray());
    }
}
