namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// Asks a GPU backend to keep weight matrices in host memory and copy them to the device ahead of use (--offload),
/// for models larger than the device's memory.
/// </summary>
/// <param name="BudgetBytes">Device bytes the weights may take at once; null: half the device's free memory when the backend is made.</param>
public sealed record WeightOffload(long? BudgetBytes = null)
{
    /// <summary>Half the free memory: the other half is left to activations, which at 1024² take several GiB for FLUX.</summary>
    public const double DefaultShareOfFreeMemory = 0.5;
}
