using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Training;

public enum TimestepSampling
{
    /// <summary>u ~ U(0, 1): diffusers' default "none" and the seed's choice.</summary>
    Uniform,

    /// <summary>u = sigmoid(n), n ~ N(mean 0, std 1).</summary>
    LogitNormal,

    /// <summary>u = 1 − v − scale·(cos²(πv/2) − 1 + v), v ~ U(0, 1), scale 1.29.</summary>
    Mode,
}

/// <summary>A per-example weight of the loss by its σ (diffusers' compute_loss_weighting_for_sd3); σ is drawn uniformly then.</summary>
public enum LossWeighting
{
    /// <summary>1 for every σ (diffusers' "none", the seed's choice).</summary>
    None,

    /// <summary>σ^−2.</summary>
    SigmaSqrt,

    /// <summary>2 / (π·(1 − 2σ + 2σ²)).</summary>
    CosMap,
}

public enum LossRegion
{
    /// <summary>Every image token (as the seed trains).</summary>
    All,

    /// <summary>Only the tokens under the mask (the region the model generates).</summary>
    Masked,
}

/// <summary>The flow-matching training objective of spec §9 on host tensors.</summary>
public static class FlowMatching
{
    public const double ModeScale = 1.29;
    private const int TrainTimesteps = 1000;

    public static TimestepSampling ParseSampling(string name) => name switch
    {
        "uniform" or "none" => TimestepSampling.Uniform,
        "logit-normal" or "logit_normal" => TimestepSampling.LogitNormal,
        "mode" => TimestepSampling.Mode,
        _ => throw new ArgumentException($"unknown timestep sampling '{name}'; use uniform, logit-normal or mode"),
    };

    public static LossWeighting ParseWeighting(string name) => name switch
    {
        "none" => LossWeighting.None,
        "sigma-sqrt" or "sigma_sqrt" => LossWeighting.SigmaSqrt,
        "cosmap" => LossWeighting.CosMap,
        _ => throw new ArgumentException($"unknown loss weighting '{name}'; use none, sigma-sqrt or cosmap"),
    };

    /// <summary>The loss weight of an example at σ.</summary>
    public static double LossWeight(LossWeighting weighting, double sigma) => weighting switch
    {
        LossWeighting.None => 1.0,
        LossWeighting.SigmaSqrt => 1.0 / (sigma * sigma),
        LossWeighting.CosMap => 2.0 / (Math.PI * (1 - 2 * sigma + 2 * sigma * sigma)),
        _ => throw new ArgumentOutOfRangeException(nameof(weighting), weighting, null),
    };

    /// <summary>
    /// σ for one sample: u drawn by <paramref name="sampling"/>, idx = floor(u·1000), σ = (1000 − idx)/1000, the
    /// unshifted training scheduler's timesteps/1000. σ lies in {0.001, …, 1}.
    /// </summary>
    public static double SampleSigma(TrainingRandom random, TimestepSampling sampling, double logitMean = 0, double logitStd = 1, double modeScale = ModeScale)
    {
        double u = sampling switch
        {
            TimestepSampling.Uniform => random.NextDouble(),
            TimestepSampling.LogitNormal => 1.0 / (1.0 + Math.Exp(-(logitMean + logitStd * random.NextGaussian()))),
            TimestepSampling.Mode => ModeDensity(random.NextDouble(), modeScale),
            _ => throw new ArgumentOutOfRangeException(nameof(sampling), sampling, null),
        };
        // A sigmoid that rounds to 1.0, or a mode scale that leaves [0, 1], must still index a real timestep.
        int index = Math.Clamp((int)Math.Floor(u * TrainTimesteps), 0, TrainTimesteps - 1);
        return (TrainTimesteps - index) / (double)TrainTimesteps;
    }

    public static double ModeDensity(double v, double scale)
    {
        double c = Math.Cos(Math.PI * v / 2);
        return 1 - v - scale * (c * c - 1 + v);
    }

    /// <summary>x_t = (1 − t)·x0 + t·noise, the model's noisy input.</summary>
    public static HostTensor Interpolate(HostTensor x0, HostTensor noise, double t)
    {
        RequireSameShape(x0, noise);
        var result = new HostTensor((int[])x0.Shape.Clone());
        float keep = (float)(1 - t), add = (float)t;
        for (int i = 0; i < result.Data.Length; i++) result.Data[i] = keep * x0.Data[i] + add * noise.Data[i];
        return result;
    }

    /// <summary>The velocity the model learns to predict: noise − x0.</summary>
    public static HostTensor VelocityTarget(HostTensor x0, HostTensor noise)
    {
        RequireSameShape(x0, noise);
        var result = new HostTensor((int[])x0.Shape.Clone());
        for (int i = 0; i < result.Data.Length; i++) result.Data[i] = noise.Data[i] - x0.Data[i];
        return result;
    }

    /// <summary>
    /// One weight per image token for the loss: 1 everywhere for <see cref="LossRegion.All"/>; for
    /// <see cref="LossRegion.Masked"/> the mean of the token's packed mask values (1 where the token is wholly
    /// generated, 0 where it is kept, a fraction on a soft edge). <paramref name="packedMask"/> is [1, L, 256] or any
    /// [.., L, C] whose last axis holds one token's mask values.
    /// </summary>
    public static float[] TokenWeights(LossRegion region, HostTensor packedMask)
    {
        if (packedMask.Rank < 2) throw new ArgumentException($"a packed mask has tokens and values per token; got {HostTensor.FormatShape(packedMask.Shape)}");
        int valuesPerToken = packedMask.Shape[^1];
        int tokens = (int)(packedMask.Length / valuesPerToken);
        var weights = new float[tokens];
        if (region == LossRegion.All)
        {
            Array.Fill(weights, 1f);
            return weights;
        }
        for (int token = 0; token < tokens; token++)
        {
            double sum = 0;
            for (int i = 0; i < valuesPerToken; i++) sum += packedMask.Data[token * valuesPerToken + i];
            weights[token] = (float)(sum / valuesPerToken);
        }
        if (weights.All(w => w == 0))
            throw new ArgumentException("--loss-region masked with a mask that covers no token: there is nothing to learn from");
        return weights;
    }

    /// <summary>
    /// The weighted mean squared error Σ_t w_t·Σ_c (pred − target)² / (C·Σ_t w_t) in float64, [tokens, C] per sample;
    /// with all weights 1 it is the plain mean over every element (diffusers' loss).
    /// </summary>
    public static double WeightedMse(HostTensor prediction, HostTensor target, float[] tokenWeights)
    {
        RequireSameShape(prediction, target);
        int channels = prediction.Shape[^1];
        int tokens = (int)(prediction.Length / channels);
        if (tokens % tokenWeights.Length != 0)
            throw new ArgumentException($"{tokens} token rows do not fit {tokenWeights.Length} token weights");
        double sum = 0, weightSum = 0;
        for (int row = 0; row < tokens; row++)
        {
            double w = tokenWeights[row % tokenWeights.Length];
            if (w == 0) continue;
            double rowSum = 0;
            for (int c = 0; c < channels; c++)
            {
                double d = prediction.Data[row * channels + c] - target.Data[row * channels + c];
                rowSum += d * d;
            }
            sum += w * rowSum;
            weightSum += w;
        }
        return sum / (weightSum * channels);
    }

    private static void RequireSameShape(HostTensor a, HostTensor b)
    {
        if (!a.Shape.AsSpan().SequenceEqual(b.Shape))
            throw new ArgumentException($"shapes differ: {HostTensor.FormatShape(a.Shape)} and {HostTensor.FormatShape(b.Shape)}");
    }
}
