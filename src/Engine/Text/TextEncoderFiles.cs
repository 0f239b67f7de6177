using System.Text.Json;

namespace InFluxEdit.Text;

/// <summary>The weights of one text encoder (one file or Hugging Face shards) and its config.json when there is one.</summary>
public sealed record EncoderWeights(IReadOnlyList<string> Files, string? ConfigPath)
{
    public string Describe() => Files.Count == 1 ? Files[0] : $"{Path.GetDirectoryName(Files[0])} ({Files.Count} shards)";
}

/// <summary>
/// Where the two text encoders and their tokenizers are. A FLUX model folder (the Hugging Face layout) has them as
/// text_encoder/ (CLIP-L), text_encoder_2/ (T5-XXL, usually sharded), tokenizer/ (vocab.json, merges.txt) and
/// tokenizer_2/ (spiece.model); single files or folders given one by one override the folder's.
/// </summary>
public sealed record TextEncoderFiles(EncoderWeights Clip, string ClipVocab, string ClipMerges, EncoderWeights T5, string T5SentencePiece)
{
    public static TextEncoderFiles Resolve(string? folder, string? clip, string? t5, string? clipTokenizer, string? t5Tokenizer)
    {
        if (folder != null && !Directory.Exists(folder))
            throw new DirectoryNotFoundException($"--text-encoder-dir {folder} does not exist");
        string? Inside(string name) => folder == null ? null : Path.Combine(folder, name);
        var problems = new List<string>();

        EncoderWeights? Weights(string? given, string? fromFolder, string option)
        {
            string? place = given ?? fromFolder;
            if (place == null)
            {
                problems.Add($"{option} (a .safetensors file or a folder of shards), or --text-encoder-dir");
                return null;
            }
            if (File.Exists(place)) return new EncoderWeights([place], null);
            if (!Directory.Exists(place))
            {
                problems.Add($"{place} ({option}) does not exist");
                return null;
            }
            var files = ShardsOf(place);
            if (files.Count == 0)
            {
                problems.Add($"{place} ({option}) holds no .safetensors files");
                return null;
            }
            string config = Path.Combine(place, "config.json");
            return new EncoderWeights(files, File.Exists(config) ? config : null);
        }

        string? TokenizerFile(string? given, string? fromFolder, string fileName, string option, bool singleFile = false)
        {
            string? place = given ?? fromFolder;
            if (place == null)
            {
                problems.Add($"{option} (the folder with {fileName}), or --text-encoder-dir");
                return null;
            }
            string path = given == null || Directory.Exists(place) ? Path.Combine(place, fileName) : place;
            if (!File.Exists(path))
                problems.Add($"{path} ({option}) does not exist");
            else if (path == place && !singleFile)
                problems.Add($"{place} ({option}) should be the folder that holds {fileName}");
            else
                return path;
            return null;
        }

        var clipWeights = Weights(clip, Inside("text_encoder"), "--clip");
        var t5Weights = Weights(t5, Inside("text_encoder_2"), "--t5");
        string? vocab = TokenizerFile(clipTokenizer, Inside("tokenizer"), "vocab.json", "--clip-tokenizer");
        string? merges = TokenizerFile(clipTokenizer, Inside("tokenizer"), "merges.txt", "--clip-tokenizer");
        string? spiece = TokenizerFile(t5Tokenizer, Inside("tokenizer_2"), "spiece.model", "--t5-tokenizer", singleFile: true);
        if (problems.Count > 0)
            throw new FileNotFoundException("the text encoders are incomplete; missing:\n  " + string.Join("\n  ", problems.Distinct()) +
                "\n(or pass --text-embeddings with precomputed 'txt' and 'vec')");
        return new TextEncoderFiles(clipWeights!, vocab!, merges!, t5Weights!, spiece!);
    }

    /// <summary>A folder's weight files: those its model.safetensors.index.json names, else every .safetensors, in name order.</summary>
    private static List<string> ShardsOf(string folder)
    {
        string index = Path.Combine(folder, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            try
            {
                using var document = JsonDocument.Parse(File.ReadAllText(index));
                var names = document.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString()!)
                    .Distinct().Order(StringComparer.Ordinal).ToList();
                foreach (string name in names)
                    if (!File.Exists(Path.Combine(folder, name)))
                        throw new FileNotFoundException($"{index} names the shard {name}, which is not in {folder}");
                return names.Select(n => Path.Combine(folder, n)).ToList();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new InvalidDataException($"{index} is not a shard index (a JSON object with a \"weight_map\" of tensor → file): {e.Message}");
            }
        }
        return Directory.EnumerateFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// What identifies these encoders for the encoding cache: every file's full path, size and last write time. A
    /// changed or replaced file misses the cache; a copied folder encodes again once (a miss, never a wrong hit).
    /// </summary>
    public string Identity() => string.Join("\n", Clip.Files.Concat(T5.Files).Append(ClipVocab).Append(ClipMerges).Append(T5SentencePiece)
        .Select(path =>
        {
            var info = new FileInfo(path);
            return $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        }));
}
