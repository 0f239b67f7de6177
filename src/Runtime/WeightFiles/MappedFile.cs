using System.IO.MemoryMappedFiles;

namespace InFluxEdit.Runtime.WeightFiles;

/// <summary>
/// A whole file mapped read-only, with a pointer to its first byte: the weights readers hand out spans over it, so a
/// 24 GB checkpoint costs no copy until a tensor is read. The pointer is valid until disposal.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _mapping;
    private readonly MemoryMappedViewAccessor _view;
    private bool _disposed;

    private MappedFile(MemoryMappedFile mapping, MemoryMappedViewAccessor view)
    {
        _mapping = mapping;
        _view = view;
        byte* start = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
        Start = start + view.PointerOffset;
    }

    public byte* Start { get; }

    /// <summary>Maps the stream's file; the mapping owns the stream from here on (disposing it closes the stream).</summary>
    public static MappedFile Map(FileStream stream)
    {
        var mapping = MemoryMappedFile.CreateFromFile(
            stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        try
        {
            return new MappedFile(mapping, mapping.CreateViewAccessor(0, stream.Length, MemoryMappedFileAccess.Read));
        }
        catch
        {
            mapping.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _mapping.Dispose();
    }
}
