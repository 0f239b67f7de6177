using InFluxEdit.Runtime.Backends.Gpu;
using InFluxEdit.Runtime.Distributed;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Training;
using Shouldly;

namespace InFluxEdit.Tests.Gpu;

/// <summary>
/// The NCCL gradient exchange on a machine with one GPU: a communicator of one rank, whose sums are the gradients
/// themselves, so every tensor's device address, length and the stream are checked end to end (a wrong address or
/// length would change or lose values). Several ranks run only where several GPUs are (bench/gpu-check.sh).
/// </summary>
public class NcclExchangeTests
{
    [CudaFact]
    public void OneRanksExchangeLeavesEveryGradientWhole()
    {
        using var backend = IlgpuBackend.CreateCuda();
        using var exchange = NcclGradientExchange.TryCreate(SingleProcess.Instance, backend, out string reason);
        exchange.ShouldNotBeNull(reason);
        var random = new Random(2);
        var parameters = new[] { 7, 4096, 3 }.Select((length, i) =>
        {
            var gradient = new HostTensor(length);
            for (int j = 0; j < length; j++) gradient.Data[j] = (float)random.NextDouble();
            return (Host: gradient, Parameter: new TrainableParameter($"p{i}", TensorTransfer.Zeros(backend, [length]), backend.Upload(gradient)));
        }).ToList();
        Span<double> loss = [2.5];
        exchange.Sum(parameters.Select(p => p.Parameter).ToList(), loss, "the test's gradients");
        loss[0].ShouldBe(2.5);
        foreach (var (host, parameter) in parameters)
        {
            TensorTransfer.Download(backend, parameter.Gradient).Data.ShouldBe(host.Data);
            parameter.Value.Dispose();
            parameter.Gradient.Dispose();
        }
    }
}
