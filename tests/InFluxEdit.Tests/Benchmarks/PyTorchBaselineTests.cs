using System.Text.Json;
using InFluxEdit.Benchmarks;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Benchmarks;

public sealed class PyTorchBaselineTests
{
    [Fact]
    public void A_training_request_asks_for_kept_and_recomputed_steps_on_our_device_and_dtype()
    {
        var request = new PyTorchBaseline.Request("python3", "cuda", "bf16", ["--random-weights", "m.json"], 4096, 512, 1, 3, 1, Train: true);

        string line = string.Join(" ", PyTorchBaseline.Arguments("s.py", request));

        line.ShouldBe("s.py --random-weights m.json --device cuda --dtype bf16 --img-tokens 4096 --txt-tokens 512 --batch 1 --runs 3 --warmup 1 --train --recompute both");
    }

    [Fact]
    public void The_scripts_result_line_gives_times_peaks_and_each_training_step()
    {
        var forward = PyTorchBaseline.Parse("""{"mode": "forward", "median_ms": 235.5, "peak_bytes": 25000000000, "device": "cuda", "dtype": "bf16", "gpu": "H100", "gemm_gflops": 700000.0}""");
        forward.MedianMs.ShouldBe(235.5);
        forward.PeakBytes.ShouldBe(25_000_000_000L);
        forward.Device.ShouldBe("cuda");

        var train = PyTorchBaseline.Parse("""{"mode": "train", "train": [{"recompute": false, "median_ms": 450, "peak_bytes": 3}, {"recompute": true, "median_ms": 600, "peak_bytes": null}]}""");
        train.MedianMs.ShouldBeNull();
        train.TrainSteps!.Select(s => (s.Recompute, s.MedianMs, s.PeakBytes)).ShouldBe([(false, (double?)450, (long?)3), (true, 600, null)]);

        PyTorchBaseline.Parse("""{"error": "cannot read weights"}""").Error.ShouldBe("cannot read weights");
    }

    [Fact]
    public void The_manifest_lists_every_parameter_and_the_presets_adapters()
    {
        var model = ModelCatalog.All.Single(m => m.Descriptor.Name == "flux-fill-tiny").Descriptor;
        var targets = LoraTargets.Preset("diffusers", model);
        string path = Path.Combine(Path.GetTempPath(), $"manifest-{Guid.NewGuid():N}.json");
        try
        {
            RandomWeights.WriteManifest(model, path, 1234, targets, 16, 1f);
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;

            root.GetProperty("seed").GetInt32().ShouldBe(1234);
            root.GetProperty("config").GetProperty("hidden_size").GetInt32().ShouldBe(int.Parse(model.Params["hidden_size"]));
            root.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()).ShouldBe(model.Parameters.Select(p => p.Name));
            root.GetProperty("parameters")[0].GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ShouldBe(model.Parameters[0].Shape);
            root.GetProperty("lora").GetProperty("targets").EnumerateArray()
                .Select(t => (t.GetProperty("module").GetString(), t.GetProperty("row_offset").GetInt32(), t.GetProperty("rows").GetInt32()))
                .ShouldBe(targets.Select(t => ((string?)t.Module.Module, t.RowOffset, t.Rows)));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
