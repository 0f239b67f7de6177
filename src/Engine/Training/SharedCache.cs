using InFluxEdit.Runtime.Distributed;

namespace InFluxEdit.Training;

/// <summary>The caches rank 0 builds and the other ranks of a data-parallel run read from the file system they share.</summary>
internal static class SharedCache
{
    public static ProcessGroupException Missing(string what, string cacheDirectory) => new(
        $"{what} is not in {cacheDirectory}, which rank 0 has just filled: every rank must see --output on one shared file system (NFS, Lustre, …)");
}
