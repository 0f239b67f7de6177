using InFluxEdit.Fill;

namespace InFluxEdit.Text;

/// <summary>
/// Where prompts' conditioning comes from: precomputed embeddings (<see cref="TextEmbeddings"/>), or the two text
/// encoders with their tokenizers, found in <see cref="TextEncoderDir"/> (else <see cref="FluxDir"/>) unless given
/// one by one.
/// </summary>
public sealed record TextEncoderSettings
{
    /// <summary>A FLUX.1 Fill model folder in the Hugging Face layout (its text encoders serve unless overridden).</summary>
    public string? FluxDir { get; init; }

    /// <summary>A folder with text_encoder/, text_encoder_2/, tokenizer/ and tokenizer_2/; default: <see cref="FluxDir"/>.</summary>
    public string? TextEncoderDir { get; init; }

    /// <summary>The CLIP-L encoder: a .safetensors file or a folder of them with config.json.</summary>
    public string? Clip { get; init; }

    /// <summary>The T5-XXL encoder: a .safetensors file or a folder of shards with config.json.</summary>
    public string? T5 { get; init; }

    /// <summary>The folder with CLIP's vocab.json and merges.txt.</summary>
    public string? ClipTokenizer { get; init; }

    /// <summary>T5's spiece.model (or the folder that holds it).</summary>
    public string? T5Tokenizer { get; init; }

    /// <summary>T5 tokens per prompt; null: the toy folder's own (its toy.json), else 128 as BFL's Fill tools.</summary>
    public int? T5Length { get; init; }

    /// <summary>Instead of the encoders: a .safetensors file with 'txt' and 'vec', used for every prompt.</summary>
    public string? TextEmbeddings { get; init; }

    /// <summary>The T5 length in effect: <see cref="T5Length"/>, else the text encoders' folder's own, else 128.</summary>
    public int PromptLength => T5Length ?? FluxModelFolder.ReadToySettings(TextEncoderDir ?? FluxDir)?.T5Length ?? 128;

    /// <summary>The encoders' and tokenizers' files (each given path overrides the folder's).</summary>
    public TextEncoderFiles ResolveFiles() => TextEncoderFiles.Resolve(TextEncoderDir ?? FluxDir, Clip, T5, ClipTokenizer, T5Tokenizer);
}
