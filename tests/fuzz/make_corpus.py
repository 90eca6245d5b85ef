#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (corpus/<target>/) from the project's test data.

Deterministic and small (a few KB per target): truncated vocabularies, the demo model's config
and tokenizer, hand-made safetensors files. Run from anywhere; rewrites corpus/ in place.
"""
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOK = ROOT / "tests" / "data" / "tokenizers"
DEMO = ROOT / "models" / "demo-dates"


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def i64(*v):
    return struct.pack(f"<{len(v)}q", *v)


def write(target, name, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    # fuzz_safetensors: every dtype, metadata, empty tensors, a scalar, an unpadded header.
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    write("fuzz_safetensors", "all_dtypes", safetensors([
        ("a", "F32", [2, 2], f32), ("b", "F16", [2], b"\x00\x3c\x00\x40"),
        ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40"), ("d", "I64", [1], i64(7)),
        ("e", "I32", [2], struct.pack("<2i", -1, 5)), ("f", "U8", [3], b"\x01\x02\x03"),
        ("g", "BOOL", [2], b"\x00\x01")], metadata={"format": "pt"}))
    write("fuzz_safetensors", "empty_and_scalar", safetensors([
        ("empty", "F32", [0, 3], b""), ("scalar", "F32", [], struct.pack("<f", 1.5))]))
    write("fuzz_safetensors", "unpadded", safetensors([("x", "U8", [5], b"hello")], pad=False))
    write("fuzz_safetensors", "header_only", safetensors([]))
    # The demo model's header (the data section cut off): a truncated real checkpoint.
    demo = (DEMO / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", demo[:8])[0]
    write("fuzz_safetensors", "demo_truncated", demo[: 8 + n + 64])

    # fuzz_run_inputs: valid inputs of the demo model, with and without masks.
    src, tgt = i64(1, 20, 21, 9, 2), i64(1, 10, 11)
    write("fuzz_run_inputs", "ids", safetensors([
        ("src_ids", "I64", [1, 5], src), ("tgt_ids", "I64", [1, 3], tgt)]))
    write("fuzz_run_inputs", "ids_batch2", safetensors([
        ("src_ids", "I64", [2, 5], src + src), ("tgt_ids", "I64", [2, 3], tgt + tgt)]))
    write("fuzz_run_inputs", "masks", safetensors([
        ("src_ids", "I64", [1, 5], src), ("tgt_ids", "I64", [1, 3], tgt),
        ("tgt_mask", "F32", [3, 3], struct.pack("<9f", 0, -1e9, -1e9, 0, 0, -1e9, 0, 0, 0)),
        ("src_key_padding_mask", "BOOL", [1, 5], b"\x00\x00\x00\x00\x01"),
        ("memory_key_padding_mask", "U8", [1, 5], b"\x00\x00\x00\x00\x01"),
        ("src_mask", "BOOL", [5, 5], b"\x00" * 25)]))

    # The same target runs the tiny gpt2 and bert checkpoints of data/ (written below).
    ids = i64(1, 5, 7, 3)
    write("fuzz_run_inputs", "gpt2", safetensors([
        ("input_ids", "I64", [1, 4], ids), ("attention_mask", "I64", [1, 4], i64(1, 1, 1, 0)),
        ("position_ids", "I64", [1, 4], i64(0, 1, 2, 3))]))
    write("fuzz_run_inputs", "bert", safetensors([
        ("input_ids", "I64", [2, 4], ids + ids), ("attention_mask", "I64", [2, 4], i64(1, 1, 1, 1, 1, 1, 0, 0)),
        ("token_type_ids", "I64", [2, 4], i64(0, 0, 1, 1, 0, 0, 0, 0))]))

    # fuzz_config: data[0] % 3 picks the weights beside config.json (0 the demo transformer,
    # 1 data/gpt2, 2 data/bert: tiny random checkpoints written here), data[0] / 3 % 2 the
    # reader (0 that family's constructor, 1 load_model's dispatch on model_type).
    demo_cfg = (DEMO / "config.json").read_text()
    gpt2 = {"model_type": "gpt2", "vocab_size": 16, "n_positions": 8, "n_embd": 8, "n_layer": 1,
            "n_head": 2, "n_inner": 16, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new"}
    bert = {"model_type": "bert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "pad_token_id": 0}
    rng = [0x2545F491]

    def rand(*shape):
        n = 1
        for d in shape:
            n *= d
        out = []
        for _ in range(n):  # xorshift32, values in [-0.1, 0.1)
            x = rng[0]
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            rng[0] = x
            out.append((x / 2**32 - 0.5) / 5)
        return ("F32", list(shape), struct.pack(f"<{n}f", *out))

    e, inner = 8, 16
    g = [("wte.weight",) + rand(16, e), ("wpe.weight",) + rand(8, e)]
    for p in ("h.0.ln_1", "h.0.ln_2", "ln_f"):
        g += [(p + ".weight",) + rand(e), (p + ".bias",) + rand(e)]
    for p, k, n in (("h.0.attn.c_attn", e, 3 * e), ("h.0.attn.c_proj", e, e),
                    ("h.0.mlp.c_fc", e, inner), ("h.0.mlp.c_proj", inner, e)):
        g += [(p + ".weight",) + rand(k, n), (p + ".bias",) + rand(n)]
    b = [("embeddings.word_embeddings.weight",) + rand(16, e),
         ("embeddings.position_embeddings.weight",) + rand(8, e),
         ("embeddings.token_type_embeddings.weight",) + rand(2, e)]
    L = "encoder.layer.0."
    for p in ("embeddings.LayerNorm", L + "attention.output.LayerNorm", L + "output.LayerNorm"):
        b += [(p + ".weight",) + rand(e), (p + ".bias",) + rand(e)]
    for p, o, i in ((L + "attention.self.query", e, e), (L + "attention.self.key", e, e),
                    (L + "attention.self.value", e, e), (L + "attention.output.dense", e, e),
                    (L + "intermediate.dense", inner, e), (L + "output.dense", e, inner),
                    ("pooler.dense", e, e)):
        b += [(p + ".weight",) + rand(o, i), (p + ".bias",) + rand(o)]
    for fam, tensors, cfg in (("gpt2", g, gpt2), ("bert", b, bert)):
        d = HERE / "data" / fam
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors").write_bytes(safetensors(tensors))
        (d / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    encoder = json.dumps({"model_type": "transformer", "d_model": 128, "nhead": 4,
                          "num_encoder_layers": 2, "num_decoder_layers": 0})
    for i, (name, text) in enumerate([("transformer", demo_cfg), ("gpt2", json.dumps(gpt2)),
                                      ("bert", json.dumps(bert))]):
        write("fuzz_config", name, bytes([i]) + text.encode())
        write("fuzz_config", name + "_dispatch", bytes([3 + i]) + text.encode())
    write("fuzz_config", "encoder_only", b"\x00" + encoder.encode())
    write("fuzz_config", "gpt2_on_demo_weights", b"\x00" + json.dumps(gpt2).encode())

    # fuzz_tokenizer_files: 0 vocab.json NUL merges.txt, 1 vocab.txt [NUL tokenizer_config.json],
    # 2 tokenizer.json.
    vocab = json.loads((TOK / "gpt2" / "vocab.json").read_text())
    small = {k: v for k, v in vocab.items() if v < 300}
    merges = (TOK / "gpt2" / "merges.txt").read_text().splitlines()
    small_merges = [merges[0]] + [m for m in merges[1:] if all(p in small for p in m.split(" "))
                                  and "".join(m.split(" ")) in small][:40]
    write("fuzz_tokenizer_files", "gpt2_bpe",
          b"\x00" + json.dumps(small).encode() + b"\x00" + "\n".join(small_merges).encode() + b"\n")
    bert_vocab = (TOK / "bert" / "vocab.txt").read_text().splitlines()[:200]
    write("fuzz_tokenizer_files", "bert_vocab", b"\x01" + "\n".join(bert_vocab).encode() + b"\n")
    write("fuzz_tokenizer_files", "bert_vocab_cased", b"\x01" + "\n".join(bert_vocab).encode() +
          b"\n\x00" + json.dumps({"do_lower_case": False}).encode())
    write("fuzz_tokenizer_files", "demo_char", b"\x02" + (DEMO / "tokenizer.json").read_bytes())
    hf_bpe = {"added_tokens": [{"id": 256, "content": "<|endoftext|>", "special": True}],
              "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
              "decoder": {"type": "ByteLevel"},
              "model": {"type": "BPE", "vocab": small, "merges": small_merges[1:]}}
    write("fuzz_tokenizer_files", "hf_bpe", b"\x02" + json.dumps(hf_bpe).encode())
    hf_wp = {"added_tokens": [{"id": 101, "content": "[CLS]", "special": True},
                              {"id": 102, "content": "[SEP]", "special": True}],
             "normalizer": {"type": "BertNormalizer", "lowercase": True},
             "pre_tokenizer": {"type": "BertPreTokenizer"},
             "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                       "max_input_chars_per_word": 100,
                       "vocab": {t: i for i, t in enumerate(bert_vocab)}}}
    write("fuzz_tokenizer_files", "hf_wordpiece", b"\x02" + json.dumps(hf_wp).encode())

    # fuzz_tokenize: first byte = mode (bits 0-1 tokenizer: 0 bpe, 1 wordpiece, 2 char;
    # bit 2 add_special; bit 3 decode the rest as u16 ids).
    texts = []
    for fam in ("gpt2", "bert"):
        for line in (TOK / fam / "cases.jsonl").read_text().splitlines()[:40]:
            texts.append(json.loads(line)["text"])
    texts += ["the 26th of November 2026", "<|endoftext|> [CLS] a [SEP] [MASK]", "caf\u00e9 \u4e2d\u6587"]
    for i, t in enumerate(texts):
        mode = [0, 1, 2, 4, 5][i % 5]
        write("fuzz_tokenize", f"text_{i:02d}", bytes([mode]) + t.encode())
    # fuzz_c_abi: model byte, tensor count, then per tensor name / dtype / rank / dims / data
    # flag and the data bytes (fuzz_c_abi.cpp), then generate options and a prompt.
    names = ["src_ids", "tgt_ids", "src", "tgt", "src_mask", "tgt_mask", "memory_mask",
             "src_key_padding_mask", "tgt_key_padding_mask", "input_ids", "attention_mask",
             "token_type_ids", "position_ids", "logits", "no_such_input"]

    def desc(name, dtype, dims, data):
        return bytes([names.index(name), dtype, len(dims)]) + bytes(dims) + b"\x01" + data

    gen = bytes([3, 0, 16, 0, 200, 32, 0, 2])  # max_new 3, greedy, T 1, top_k 0, top_p 1, ...
    write("fuzz_c_abi", "demo_ids", bytes([0, 2]) + desc("src_ids", 3, [1, 3], i64(5, 6, 2) + b"\0") +
          desc("tgt_ids", 3, [1, 2], i64(1, 7) + b"\0") + gen + b"1 May 2020")
    write("fuzz_c_abi", "gpt2_ids", bytes([1, 1]) + desc("input_ids", 3, [1, 4], i64(1, 2, 3, 4) + b"\0") + gen)
    write("fuzz_c_abi", "bert_ids_mask", bytes([2, 2]) + desc("input_ids", 3, [2, 2], i64(1, 2, 3, 0) + b"\0") +
          desc("attention_mask", 3, [2, 2], i64(1, 1, 1, 0) + b"\0") + gen)
    write("fuzz_c_abi", "demo_floats", bytes([0, 2]) + desc("src", 0, [1, 2, 8], b"\0" * 65) +
          desc("tgt", 0, [1, 1, 8], b"\0" * 33) + bytes([2, 1, 8, 5, 150, 40, 7, 3]) + b"12/11/2026")
    write("fuzz_tokenize", "invalid_utf8", b"\x00ab\xc3(\xe2\x82\xf0\x9f\x98")
    write("fuzz_tokenize", "decode_bpe", b"\x08" + struct.pack("<6H", 15496, 995, 12520, 99, 247, 50256))
    write("fuzz_tokenize", "decode_wordpiece", b"\x0d" + struct.pack("<4H", 101, 7592, 2088, 102))


if __name__ == "__main__":
    main()
