using System.Security.Cryptography;
using System.Text;
using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Training;

namespace InFluxEdit.Text;

/// <summary>
/// The text conditioning of every prompt or caption a command needs, computed before the transformer loads: each
/// text is looked up in the on-disk cache (keyed by the encoders' files, the T5 length and the text), the encoders
/// are loaded only when something is missing, and they are released again before this returns, so the transformer
/// never shares memory with them.
/// </summary>
public static class CaptionEncodings
{
    /// <param name="cacheOnly">Every text must be in the cache already (ranks after rank 0 built it): a missing one is an error, never encoded.</param>
    public static IReadOnlyDictionary<string, TextConditioning> Encode(IReadOnlyCollection<string> texts, TextEncoderSettings options,
        ModelDescriptor transformer, string cacheDirectory, IBackend backend, IReadOnlyList<CompiledModelInfo> catalog, TextWriter log,
        IProgress<StageProgress>? progress = null, bool cacheOnly = false)
    {
        var distinct = texts.Distinct(StringComparer.Ordinal).ToList();
        if (options.TextEmbeddings != null)
        {
            var fixedText = TextConditioning.Load(options.TextEmbeddings, transformer);
            log.WriteLine(distinct.Count > 1
                ? $"text: every one of the {distinct.Count} captions gets {options.TextEmbeddings} (--text-embeddings replaces the encoders)"
                : $"text: {options.TextEmbeddings}");
            return distinct.ToDictionary(t => t, _ => fixedText, StringComparer.Ordinal);
        }

        var files = options.ResolveFiles();
        Directory.CreateDirectory(cacheDirectory);
        string identity = files.Identity();
        // Resolved once: it may read the model folder's toy.json.
        int t5Length = options.PromptLength;
        var result = new Dictionary<string, TextConditioning>(StringComparer.Ordinal);
        var missing = new List<string>();
        foreach (string text in distinct)
        {
            var cached = TryRead(CachePath(cacheDirectory, identity, t5Length, text), text, transformer, log);
            if (cached != null) result[text] = cached;
            else missing.Add(text);
        }
        if (missing.Count > 0 && cacheOnly) throw SharedCache.Missing($"the encoding of \"{missing[0]}\"", cacheDirectory);
        if (missing.Count > 0)
        {
            using var encoder = PromptEncoder.Load(files, t5Length, backend, catalog, log, progress);
            var overflows = missing.Select(encoder.Overflows).ToList();
            // Cut silently, a caption's deciding words (after a long prefix, say) would never reach the model.
            int clipCut = overflows.Count(o => o.Clip), t5Cut = overflows.Count(o => o.T5);
            if (clipCut + t5Cut > 0)
                log.WriteLine($"note: of {missing.Count} prompt(s), {clipCut} overflow CLIP's tokens and {t5Cut} T5's {t5Length}: the encoders see only their start " +
                              "(shorten them, or give a longer --t5-length)");
            foreach (string text in missing)
            {
                var encoded = encoder.Encode(text);
                encoded.Validate(transformer, $"the encoders' output for \"{text}\"");
                SafeTensorsWriter.Write(CachePath(cacheDirectory, identity, t5Length, text),
                    new Dictionary<string, Runtime.Tensors.HostTensor> { [TextConditioning.TxtName] = encoded.Txt, [TextConditioning.VecName] = encoded.Vec },
                    new Dictionary<string, string> { ["text"] = text, ["t5_length"] = t5Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                result[text] = encoded;
            }
        }
        log.WriteLine($"text: {distinct.Count} distinct prompt(s), {distinct.Count - missing.Count} from the cache in {cacheDirectory}" +
                      (missing.Count > 0 ? $", {missing.Count} encoded (the encoders are released before the transformer loads)" : ""));
        return result;
    }

    /// <summary>One file per text: the SHA-256 of the encoders' identity, the T5 length and the text.</summary>
    public static string CachePath(string cacheDirectory, string encoderIdentity, int t5Length, string text)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes($"influxedit-text-v1\n{encoderIdentity}\n{t5Length}\n{text}"));
        return Path.Combine(cacheDirectory, Convert.ToHexStringLower(hash)[..32] + ".safetensors");
    }

    /// <summary>A cached encoding, or null when there is none or it is unreadable (it is then encoded again and rewritten).</summary>
    private static TextConditioning? TryRead(string path, string text, ModelDescriptor transformer, TextWriter log)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var file = SafeTensorsFile.Open(path);
            if (!file.Metadata.TryGetValue("text", out string? stored) || stored != text) return null;
            var conditioning = new TextConditioning(file.ReadFloat32(TextConditioning.TxtName), file.ReadFloat32(TextConditioning.VecName));
            conditioning.Validate(transformer, path);
            return conditioning;
        }
        catch (Exception e) when (e is InvalidDataException or IOException or KeyNotFoundException)
        {
            log.WriteLine($"warning: the cached encoding {path} is unusable ({e.Message}); encoding again");
            return null;
        }
    }
}
