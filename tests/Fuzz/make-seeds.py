#!/usr/bin/env python3
"""Writes the fuzzers' starting inputs into tests/fuzz-corpus/<target>/seed-*: small valid files of every kind each
reader takes (afl-fuzz mutates valid files far better than noise). Standard library only; run from the repository root.
The seeds are committed with the corpus; this script says how they were made and remakes them."""
import json, os, struct, zlib

ROOT = os.path.join("tests", "fuzz-corpus")


def put(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def shapes_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return {k: v["shape"] for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}


# safetensors: every dtype family, metadata, a scalar, an empty tensor.
put("safetensors", "mixed.safetensors", safetensors({
    "a": ("F32", [2, 2], f32([1, -2, 3.5, 0])),
    "b": ("BF16", [3], b"\x80\x3f\x00\x40\xc0\x7f"),
    "c": ("F16", [1, 2], b"\x00\x3c\x00\xc0"),
    "ids": ("I64", [2], struct.pack("<2q", 49406, 7)),
    "s": ("F64", [], struct.pack("<d", 0.25)),
    "e": ("F32", [0, 4], b""),
    "flag": ("BOOL", [1], b"\x01"),
}, {"format": "pt", "note": "seed"}))
put("safetensors", "empty.safetensors", safetensors({}))

# LoRA for the tiny FLUX model (shapes read from the golden weights): kohya names with alpha, and PEFT names, rank 1, F16.
shapes = shapes_of(os.path.join("tests", "golden", "flux-tiny.safetensors"))


def pair(down_name, up_name, shape):
    out_features, in_features = shape
    return {down_name: ("F16", [1, in_features], b"\x00\x2c" * in_features),
            up_name: ("F16", [out_features, 1], b"\x00\xac" * out_features)}


kohya = {}
for module in ["double_blocks.0.img_attn.qkv", "txt_in"]:
    key = "lora_unet_" + module.replace(".", "_")
    kohya.update(pair(key + ".lora_down.weight", key + ".lora_up.weight", shapes[module + ".weight"]))
    kohya[key + ".alpha"] = ("F32", [], f32([1.0]))
put("lora", "kohya.safetensors", safetensors(kohya))
put("lora", "peft.safetensors", safetensors(pair("single_blocks.1.linear1.lora_A.weight",
                                                 "single_blocks.1.linear1.lora_B.weight", shapes["single_blocks.1.linear1.weight"])))

# Schema: a model file, NUL, its graph file (the repository's own smaller pairs).
for model, graph in [("clip-tiny", "clip-text"), ("t5-tiny", "t5-encoder"), ("flux-vae-tiny", "flux-vae")]:
    with open(os.path.join("schemas", model + ".json"), "rb") as m, open(os.path.join("schemas", "graphs", graph + ".json"), "rb") as g:
        put("schema", model + ".json", m.read() + b"\0" + g.read())


# CLIP tokenizer: a byte-level vocabulary (GPT-2's byte alphabet, each also with </w>), a few merges, NUL between files.
def byte_alphabet():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


symbols = byte_alphabet()
merges = [("r", "e"), ("re", "d</w>"), ("c", "a"), ("ca", "r</w>"), ("a", "</w>")]
vocab_tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
vocab = {token: i for i, token in enumerate(vocab_tokens)}
merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
put("clip-tokenizer", "tiny.bin", json.dumps(vocab, ensure_ascii=False).encode() + b"\0" + merges_text.encode())


# SentencePiece: a unigram ModelProto without a charsmap (identity normaliser) and one with T5's flags.
def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def piece(text, score, kind=1):
    return field(1, 2, field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(kind)))


pieces = piece("<pad>", 0, 3) + piece("</s>", 0, 3) + piece("<unk>", 0, 2)
for i, text in enumerate(["▁", "▁a", "▁red", "▁car", "a", "r", "e", "d", "c", "s", "<extra_id_0>"]):
    pieces += piece(text, -1.0 - i, 4 if text.startswith("<extra") else 1)
trainer = field(2, 2, field(3, 0, varint(1)) + field(40, 0, varint(2)) + field(42, 0, varint(1)) + field(43, 0, varint(0)))
normalizer = field(3, 2, field(1, 2, b"identity") + field(3, 0, varint(1)) + field(4, 0, varint(1)) + field(5, 0, varint(1)))
put("spm-tokenizer", "tiny.model", pieces + trainer + normalizer)
put("spm-tokenizer", "no-normalizer.model", pieces + trainer)


# Images: PNG (gray, RGB, RGBA), BMP, GIF, PBM, each a few pixels.
def png(width, height, color_type, channels, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + bytes(row) for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


put("image", "gray.png", png(3, 2, 0, 1, [[0, 128, 255], [10, 20, 30]]))
put("image", "rgb.png", png(2, 2, 2, 3, [[255, 0, 0, 0, 255, 0], [0, 0, 255, 9, 9, 9]]))
put("image", "rgba.png", png(2, 1, 6, 4, [[1, 2, 3, 4, 5, 6, 7, 8]]))
bmp_pixels = bytes([0, 0, 255, 0, 255, 0, 0, 0]) + bytes([255, 0, 0, 9, 9, 9, 0, 0])   # 2x2, 24-bit, rows padded to 4
put("image", "rgb.bmp", b"BM" + struct.pack("<IHHI", 54 + len(bmp_pixels), 0, 0, 54)
    + struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, len(bmp_pixels), 2835, 2835, 0, 0) + bmp_pixels)
put("image", "dot.gif", bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"))
put("image", "tiny.pbm", b"P1\n3 2\n1 0 1\n0 1 0\n")


# GGUF v3: metadata of every scalar type, a string and arrays; tensors in F32, F16, Q8_0, Q4_0, Q4_K, Q6_K.
def gguf_string(text):
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_value(kind, value):
    """kind: a GGUF value type id (gguf_metadata_value_type); arrays are (9, (element kind, [values]))."""
    if kind == 8:
        return gguf_string(value)
    if kind == 9:
        element, items = value
        return struct.pack("<IQ", element, len(items)) + b"".join(gguf_value(element, item) for item in items)
    return struct.pack("<" + {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}[kind], value)


def gguf(metadata, tensors, alignment=32):
    """metadata: [(key, kind, value)]; tensors: [(name, ggml type id, dimensions innermost first, raw bytes)]."""
    out = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    data = b""
    for name, kind, dims, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        out += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
        out += struct.pack("<IQ", kind, len(data))
        data += raw
    return out + b"\0" * (-len(out) % alignment) + data


def f16(values):
    return struct.pack("<%de" % len(values), *values)


def pattern(count, seed):
    """Deterministic bytes standing in for quantized codes (any byte is a valid code)."""
    return bytes((seed + 37 * i) % 256 for i in range(count))


q8_0 = f16([0.5]) + pattern(32, 1)                                              # d, 32 int8
q4_0 = f16([0.25]) + pattern(16, 2)                                             # d, 32 nibbles
q4_k = f16([0.125, 0.0625]) + pattern(12, 3) + pattern(128, 4)                  # d, dmin, 6-bit scales/mins, 256 nibbles
q6_k = pattern(128, 5) + pattern(64, 6) + pattern(16, 7) + f16([0.03125])       # low nibbles, high bits, scales, d
put("gguf", "mixed.gguf", gguf(
    [("general.architecture", 8, "flux"), ("general.alignment", 4, 32), ("u8", 0, 7), ("i8", 1, -7), ("u16", 2, 700),
     ("i16", 3, -700), ("i32", 5, -70000), ("f32", 6, 1.5), ("flag", 7, True), ("u64", 10, 1 << 40),
     ("i64", 11, -(1 << 40)), ("f64", 12, 0.125), ("names", 9, (8, ["a", "bc"])), ("ids", 9, (5, [1, -2, 3])),
     ("nested", 9, (9, [(0, [1, 2]), (6, [0.5])]))],
    [("w.f32", 0, [2, 2], f32([1, -2, 3.5, 0])), ("w.f16", 1, [3], f16([1, -2, 0.5])),
     ("w.q8_0", 8, [32, 1], q8_0), ("w.q4_0", 2, [32], q4_0)]))
put("gguf", "k-quants.gguf", gguf(
    [("general.architecture", 8, "flux"), ("general.quantization_version", 4, 2)],
    [("blocks.0.q4_k", 12, [256, 1], q4_k), ("blocks.0.q6_k", 14, [256], q6_k), ("empty", 0, [0, 4], b""),
     ("scalar", 0, [], f32([2]))], alignment=32))
put("gguf", "no-tensors.gguf", gguf([("general.name", 8, "tiny"), ("general.alignment", 4, 16)], [], alignment=16))
