using System.Buffers;

namespace InFluxEdit.Runtime.SafeTensors;

/// <summary>
/// Memory over a slice of a mapped file. Holding the file keeps its mapping from being finalized while the memory
/// is in use; disposing the file still invalidates it, as for spans.
/// </summary>
internal sealed unsafe class MappedMemory(SafeTensorsFile owner, byte* start, int length) : MemoryManager<byte>
{
    private readonly SafeTensorsFile _owner = owner;

    public override Span<byte> GetSpan() => new(start, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(start + elementIndex, pinnable: this);

    public override void Unpin() { }

    protected override void Dispose(bool disposing) { }

    public override string ToString() => $"{length} mapped bytes of {_owner.Path}";
}
