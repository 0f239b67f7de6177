using System.Text;
using InFluxEdit.Generator;
using InFluxEdit.Generator.Common;
using InFluxEdit.Generator.Parsing;
using InFluxEdit.Models;
using InFluxEdit.Runtime.Gguf;
using InFluxEdit.Runtime.Images;
using InFluxEdit.Runtime.Lora;
using InFluxEdit.Runtime.SafeTensors;
using InFluxEdit.Runtime.Text;
using InFluxEdit.Runtime.WeightFiles;

namespace InFluxEdit.Fuzz;

/// <summary>
/// The readers a user's files reach, each as one entry point over raw bytes: the AFL++ harness (Program.cs) and the
/// corpus replay test (tests/InFluxEdit.Tests/Fuzz) call the same code. <see cref="Run"/> returns when the reader gave a
/// result or refused the input with its documented clear error; any other exception escapes and is a finding.
/// </summary>
public static class FuzzTargets
{
    /// <summary>Inputs that hold two files put a NUL byte between them (neither JSON nor merges.txt may hold one).</summary>
    public const byte FileSeparator = 0;

    private static readonly Dictionary<string, Action<byte[], string>> Targets = new(StringComparer.Ordinal)
    {
        ["safetensors"] = SafeTensors,
        ["lora"] = Lora,
        ["schema"] = Schema,
        ["clip-tokenizer"] = ClipTokenizerFiles,
        ["spm-tokenizer"] = SentencePieceModel,
        ["image"] = Image,
        ["gguf"] = Gguf,
    };

    /// <summary>Prompts run through each loaded tokenizer: plain, punctuation, non-Latin, special-token text.</summary>
    private static readonly string[] Prompts =
    {
        "a red car parked by the sea", "  İstanbul'da ΣΊΣΥΦΟΣ 東京 — 123 ", "<|endoftext|></s><pad><unk>", "",
    };

    public static IReadOnlyCollection<string> Names => Targets.Keys;

    /// <summary>Feeds <paramref name="input"/> to the target; files it needs are written into <paramref name="workDir"/>.</summary>
    public static void Run(string target, byte[] input, string workDir)
    {
        if (!Targets.TryGetValue(target, out var run))
            throw new ArgumentException($"unknown fuzz target '{target}'; known: {string.Join(", ", Targets.Keys)}");
        try
        {
            run(input, workDir);
        }
        catch (Exception e) when (IsDocumentedRefusal(e))
        {
        }
    }

    /// <summary>
    /// The exceptions the readers document for bad files: each carries a one-line message naming the file.
    /// <see cref="LoraMismatchException"/>, <see cref="SafeTensorsException"/> and <see cref="GgufException"/> are IOExceptions of their own;
    /// a bare IOException (disk trouble) is not a refusal of the input.
    /// </summary>
    private static bool IsDocumentedRefusal(Exception e) =>
        e is InvalidDataException or SafeTensorsException or LoraMismatchException or GgufException;

    private static void SafeTensors(byte[] input, string workDir)
    {
        using var file = SafeTensorsFile.Open(Write(workDir, "fuzz.safetensors", input));
        foreach (var entry in file.Tensors) file.ReadFloat32(entry.Name);
        foreach (var other in file.OtherTensors.Where(o => o.DTypeName == "I64")) file.ReadInt64(other.Name, out _);
        foreach (var (key, value) in file.Metadata) _ = key.Length + value.Length;
    }

    /// <summary>Opened the way the CLI opens weights (by extension and magic), every metadata value read, every tensor decoded.</summary>
    private static void Gguf(byte[] input, string workDir)
    {
        using var file = (GgufFile)WeightFile.Open(Write(workDir, "fuzz.gguf", input));
        foreach (var (key, value) in file.Metadata) _ = key.Length + value.Length;
        foreach (var tensor in file.StoredTensors) file.ReadFloat32(tensor);
    }

    private static void Lora(byte[] input, string workDir) =>
        LoraReader.ReadDeltas(Write(workDir, "fuzz-lora.safetensors", input), FluxFillTiny.Descriptor);

    /// <summary>A model file, NUL, its graph file: parsed and bound as the source generator does; diagnostics, never exceptions.</summary>
    private static void Schema(byte[] input, string workDir)
    {
        var (modelBytes, graphBytes) = Split(input);
        var model = SchemaParser.ParseModel(Path.Combine(workDir, "model.json"), Encoding.UTF8.GetString(modelBytes));
        var graph = SchemaParser.ParseGraph(Path.Combine(workDir, "graphs", "graph.json"), Encoding.UTF8.GetString(graphBytes));
        ModelCompiler.Compile(model, new[] { graph }.ToEquatableArray());
    }

    /// <summary>vocab.json, NUL, merges.txt.</summary>
    private static void ClipTokenizerFiles(byte[] input, string workDir)
    {
        var (vocab, merges) = Split(input);
        var tokenizer = ClipTokenizer.Load(Write(workDir, "vocab.json", vocab), Write(workDir, "merges.txt", merges));
        foreach (string prompt in Prompts) tokenizer.Encode(prompt);
    }

    private static void SentencePieceModel(byte[] input, string workDir)
    {
        var tokenizer = SentencePieceTokenizer.Load(Write(workDir, "spiece.model", input));
        foreach (string prompt in Prompts) tokenizer.Encode(prompt, 32);
    }

    private static void Image(byte[] input, string workDir)
    {
        string path = Write(workDir, "fuzz-image", input);
        ImageFile.LoadRgb(path);
        ImageFile.LoadMask(path);
    }

    private static (byte[] First, byte[] Second) Split(byte[] input)
    {
        int separator = Array.IndexOf(input, FileSeparator);
        return separator < 0 ? (input, Array.Empty<byte>()) : (input[..separator], input[(separator + 1)..]);
    }

    private static string Write(string workDir, string name, byte[] bytes)
    {
        string path = Path.Combine(workDir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
