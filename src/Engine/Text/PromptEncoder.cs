using InFluxEdit.Fill;
using InFluxEdit.Runtime.Backends;
using InFluxEdit.Runtime.Models;
using InFluxEdit.Runtime.Tensors;
using InFluxEdit.Runtime.Text;

namespace InFluxEdit.Text;

/// <summary>
/// FLUX's two text encoders with their tokenizers: T5's token states become txt [1, L, d_model], CLIP's pooled output
/// vec [1, hidden] (spec §7: no attention mask, pads attended, so txt depends on the T5 length).
/// </summary>
public sealed class PromptEncoder : IDisposable
{
    private readonly ClipTokenizer _clipTokenizer;
    private readonly SentencePieceTokenizer _t5Tokenizer;
    private readonly LoadedModel _clip;
    private readonly LoadedModel _t5;
    private readonly int _clipLength;

    private PromptEncoder(ClipTokenizer clipTokenizer, SentencePieceTokenizer t5Tokenizer, LoadedModel clip, LoadedModel t5, int t5Length)
    {
        _clipTokenizer = clipTokenizer;
        _t5Tokenizer = t5Tokenizer;
        _clip = clip;
        _t5 = t5;
        T5Length = t5Length;
        _clipLength = TextConditioning.IntParam(clip.Model.Info, "max_position_embeddings");
        RequireVocabularyFits(clipTokenizer.VocabularySize, clip.Model.Info, "the CLIP tokenizer");
        RequireVocabularyFits(t5Tokenizer.VocabularySize, t5.Model.Info, "the T5 tokenizer");
    }

    public int T5Length { get; }

    /// <summary>Loads both tokenizers and encoders (the weights are checked against their schemas before upload).</summary>
    public static PromptEncoder Load(TextEncoderFiles files, int t5Length, IBackend backend, IReadOnlyList<CompiledModelInfo> catalog, TextWriter log,
        IProgress<StageProgress>? progress = null)
    {
        if (t5Length < 1) throw new ArgumentException($"--t5-length must be at least 1 (got {t5Length})");
        var clipTokenizer = ClipTokenizer.Load(files.ClipVocab, files.ClipMerges);
        var t5Tokenizer = SentencePieceTokenizer.Load(files.T5SentencePiece);
        var clip = LoadedModel.LoadFiles(files.Clip.Files, files.Clip.ConfigPath, TextEncoders.ClipFamily, backend, catalog, StageProgress.Of(progress, "loading CLIP", "tensors"));
        try
        {
            log.WriteLine($"clip: {clip.Model.Info.Name} from {files.Clip.Describe()} — {clip.Reason}");
            var t5 = LoadedModel.LoadFiles(files.T5.Files, files.T5.ConfigPath, TextEncoders.T5Family, backend, catalog, StageProgress.Of(progress, "loading T5", "tensors"));
            log.WriteLine($"t5: {t5.Model.Info.Name} from {files.T5.Describe()} — {t5.Reason}; prompts padded to {t5Length} T5 tokens");
            try
            {
                return new PromptEncoder(clipTokenizer, t5Tokenizer, clip, t5, t5Length);
            }
            catch
            {
                t5.Dispose();
                throw;
            }
        }
        catch
        {
            clip.Dispose();
            throw;
        }
    }

    /// <summary>Whether the prompt's tokens overflow CLIP's length and T5's (the encoders then see only its start).</summary>
    public (bool Clip, bool T5) Overflows(string prompt) =>
        (_clipTokenizer.Tokenize(prompt).Count > _clipLength - 2, _t5Tokenizer.Tokenize(prompt).Count > T5Length - 1);

    /// <summary>Tokenizes and encodes one prompt.</summary>
    public TextConditioning Encode(string prompt)
    {
        var (_, vec) = TextEncoders.EncodeClip(_clip.Model, [_clipTokenizer.Encode(prompt, _clipLength)]);
        var t5Ids = _t5Tokenizer.Encode(prompt, T5Length);
        // A sentinel (<extra_id_N>) numbers past the model's pieces; a small T5 may have no embedding row for it.
        int rows = TextConditioning.IntParam(_t5.Model.Info, "vocab_size");
        if (t5Ids.FirstOrDefault(id => id >= rows, -1) is var outside and >= 0)
            throw new InvalidDataException(
                $"the prompt spells a T5 special token (id {outside}) that {_t5.Model.Info.Name}'s embedding ({rows} rows) has no row for: remove the <extra_id_N> from the prompt");
        var txt = TextEncoders.EncodeT5(_t5.Model, [t5Ids]);
        return new TextConditioning(txt, vec);
    }

    private static void RequireVocabularyFits(int tokenizerSize, ModelDescriptor encoder, string what)
    {
        int rows = TextConditioning.IntParam(encoder, "vocab_size");
        if (tokenizerSize > rows)
            throw new InvalidDataException(
                $"{what} has {tokenizerSize} tokens but {encoder.Name}'s embedding only {rows} rows: the tokenizer belongs to another model");
    }

    public void Dispose()
    {
        _clip.Dispose();
        _t5.Dispose();
    }
}
