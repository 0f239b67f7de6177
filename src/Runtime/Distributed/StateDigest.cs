using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace InFluxEdit.Runtime.Distributed;

/// <summary>A SHA-256 digest built from a run's state piece by piece, for ranks to compare what they hold.</summary>
public sealed class StateDigest
{
    private const int SampleBytes = 1 << 20;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    public StateDigest Add(string text)
    {
        _hash.AppendData(Encoding.UTF8.GetBytes(text + "\n"));
        return this;
    }

    public StateDigest Add(ReadOnlySpan<float> values)
    {
        _hash.AppendData(MemoryMarshal.AsBytes(values));
        return this;
    }

    /// <summary>
    /// A file (or every file of a folder) by its length and three 1 MiB samples (start, middle, end): different
    /// checkpoints differ there, and hashing a 24 GB file whole on every rank would delay each start by minutes.
    /// </summary>
    public StateDigest AddFileSample(string path)
    {
        var files = Directory.Exists(path)
            ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList()
            : [path];
        var buffer = new byte[SampleBytes];
        foreach (string file in files)
        {
            using var stream = File.OpenRead(file);
            Add($"{Path.GetRelativePath(Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!, file)} {stream.Length}");
            foreach (long start in new[] { 0, stream.Length / 2, stream.Length - SampleBytes })
            {
                stream.Position = Math.Max(0, start);
                int read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
                _hash.AppendData(buffer, 0, read);
            }
        }
        return this;
    }

    /// <summary>The digest of everything added; the builder is spent.</summary>
    public byte[] Finish()
    {
        byte[] digest = _hash.GetHashAndReset();
        _hash.Dispose();
        return digest;
    }
}
