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

    # fuzz_config: first byte = reader (0 transformer, 1 gpt2, 2 bert, 3 load_model).
    demo_cfg = (DEMO / "config.json").read_text()
    gpt2 = json.dumps({"model_type": "gpt2", "vocab_size": 64, "n_positions": 16, "n_embd": 32,
                       "n_layer": 2, "n_head": 4, "layer_norm_epsilon": 1e-5,
                       "activation_function": "gelu_new", "bos_token_id": 0, "eos_token_id": 0})
    bert = json.dumps({"model_type": "bert", "vocab_size": 64, "hidden_size": 32,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                       "hidden_act": "gelu", "max_position_embeddings": 16, "type_vocab_size": 2,
                       "layer_norm_eps": 1e-12, "pad_token_id": 0})
    encoder = json.dumps({"model_type": "transformer", "d_model": 128, "nhead": 4,
                          "num_encoder_layers": 2, "num_decoder_layers": 0})
    for i, (name, text) in enumerate([("transformer", demo_cfg), ("gpt2", gpt2), ("bert", bert)]):
        write("fuzz_config", name, bytes([i]) + text.encode())
        write("fuzz_config", name + "_dispatch", b"\x03" + text.encode())
    write("fuzz_config", "encoder_only", b"\x00" + encoder.encode())

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
    write("fuzz_tokenize", "invalid_utf8", b"\x00ab\xc3(\xe2\x82\xf0\x9f\x98")
    write("fuzz_tokenize", "decode_bpe", b"\x08" + struct.pack("<6H", 15496, 995, 12520, 99, 247, 50256))
    write("fuzz_tokenize", "decode_wordpiece", b"\x0d" + struct.pack("<4H", 101, 7592, 2088, 102))


if __name__ == "__main__":
    main()
