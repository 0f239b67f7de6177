namespace InFluxEdit.Tests.Training;

/// <summary>
/// A test that launches ranks with Open MPI's mpirun: reported as skipped (with the reason) where it is not installed.
/// .ci/run installs it, so CI always runs these.
/// </summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiJob.FindMpirun() == null) Skip = "mpirun is not on PATH: install Open MPI (apt-get install openmpi-bin), as .ci/run does";
    }
}
