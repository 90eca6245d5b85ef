#!/usr/bin/python3
"""Write a random-weight Hugging Face-layout checkpoint (gpt2 or bert) for tests and benchmarks.

The directory holds config.json (the keys HF's GPT2Config / BertConfig write) and
model.safetensors, or shards with model.safetensors.index.json. Tensor names and layouts are
those HF exports: GPT-2 Conv1D weights [in, out], BERT Linear weights [out, in]. Weights are
random (seeded) with every bias and LayerNorm parameter perturbed, so a missing term shows; the
outputs mean nothing.

    make_hf_checkpoint.py gpt2 DIR [--layers 2 --hidden 48 --heads 4 --vocab 100 --positions 64]
        [--inner N] [--activation gelu_new] [--prefix] [--lm-head] [--attn-bias-buffers]
        [--shards N] [--dtype f32|f16|bf16] [--seed 0]
    make_hf_checkpoint.py bert DIR [--layers 2 --hidden 48 --heads 4 --vocab 100 --positions 64]
        [--inner N] [--type-vocab 2] [--activation gelu] [--prefix] [--old-names]
        [--no-pooler] [--position-ids-buffer] [--cls-head] [--shards N] [--dtype ...] [--seed 0]

--prefix stores names under "transformer." / "bert." (GPT2LMHeadModel / BertFor* checkpoints);
--lm-head writes an untied lm_head.weight; --attn-bias-buffers the old h.N.attn.bias /
attn.masked_bias buffers; --old-names LayerNorm gamma/beta; --cls-head a masked-LM head (cls.*),
which loaders of BertModel ignore.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import numpy as np  # noqa: E402

import safetensors_io  # noqa: E402


def _rng_normal(rng, shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def gpt2_tensors(a, rng) -> dict:
    e, inner, v, p = a.hidden, a.inner or 4 * a.hidden, a.vocab, a.positions
    t = {"wte.weight": _rng_normal(rng, (v, e), 0.5), "wpe.weight": _rng_normal(rng, (p, e), 0.2)}
    for i in range(a.layers):
        q = f"h.{i}."
        t[q + "ln_1.weight"] = 1.0 + _rng_normal(rng, (e,), 0.2)
        t[q + "ln_1.bias"] = _rng_normal(rng, (e,), 0.1)
        t[q + "attn.c_attn.weight"] = _rng_normal(rng, (e, 3 * e), 1.0 / np.sqrt(e))
        t[q + "attn.c_attn.bias"] = _rng_normal(rng, (3 * e,), 0.1)
        t[q + "attn.c_proj.weight"] = _rng_normal(rng, (e, e), 1.0 / np.sqrt(e))
        t[q + "attn.c_proj.bias"] = _rng_normal(rng, (e,), 0.1)
        t[q + "ln_2.weight"] = 1.0 + _rng_normal(rng, (e,), 0.2)
        t[q + "ln_2.bias"] = _rng_normal(rng, (e,), 0.1)
        t[q + "mlp.c_fc.weight"] = _rng_normal(rng, (e, inner), 1.0 / np.sqrt(e))
        t[q + "mlp.c_fc.bias"] = _rng_normal(rng, (inner,), 0.1)
        t[q + "mlp.c_proj.weight"] = _rng_normal(rng, (inner, e), 1.0 / np.sqrt(inner))
        t[q + "mlp.c_proj.bias"] = _rng_normal(rng, (e,), 0.1)
        if a.attn_bias_buffers:
            t[q + "attn.bias"] = np.tril(np.ones((p, p), np.float32)).reshape(1, 1, p, p)
            t[q + "attn.masked_bias"] = np.array(-1e4, np.float32)
    t["ln_f.weight"] = 1.0 + _rng_normal(rng, (e,), 0.2)
    t["ln_f.bias"] = _rng_normal(rng, (e,), 0.1)
    return t


def gpt2_config(a) -> dict:
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": a.layers, "n_embd": a.hidden,
        "n_head": a.heads, "n_positions": a.positions, "n_ctx": a.positions, "vocab_size": a.vocab,
        "n_inner": a.inner, "layer_norm_epsilon": a.eps if a.eps is not None else 1e-5,
        "activation_function": a.activation or "gelu_new", "bos_token_id": a.vocab - 1,
        "eos_token_id": a.vocab - 1, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": a.inverse_layer_scale,
    }


def bert_tensors(a, rng) -> dict:
    h, inner = a.hidden, a.inner or 4 * a.hidden
    e = "embeddings."
    t = {e + "word_embeddings.weight": _rng_normal(rng, (a.vocab, h), 0.5),
         e + "position_embeddings.weight": _rng_normal(rng, (a.positions, h), 0.2),
         e + "token_type_embeddings.weight": _rng_normal(rng, (a.type_vocab, h), 0.2)}
    ln_w, ln_b = ("gamma", "beta") if a.old_names else ("weight", "bias")

    def ln(name):
        t[name + "." + ln_w] = 1.0 + _rng_normal(rng, (h,), 0.2)
        t[name + "." + ln_b] = _rng_normal(rng, (h,), 0.1)

    def dense(name, out, inp):
        t[name + ".weight"] = _rng_normal(rng, (out, inp), 1.0 / np.sqrt(inp))
        t[name + ".bias"] = _rng_normal(rng, (out,), 0.1)

    ln(e + "LayerNorm")
    for i in range(a.layers):
        q = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            dense(q + "attention.self." + n, h, h)
        dense(q + "attention.output.dense", h, h)
        ln(q + "attention.output.LayerNorm")
        dense(q + "intermediate.dense", inner, h)
        dense(q + "output.dense", h, inner)
        ln(q + "output.LayerNorm")
    if not a.no_pooler:
        dense("pooler.dense", h, h)
    if a.position_ids_buffer:
        t[e + "position_ids"] = np.arange(a.positions, dtype=np.int64).reshape(1, -1)
    return t


def bert_config(a) -> dict:
    return {
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": a.vocab, "hidden_size": a.hidden,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "intermediate_size": a.inner or 4 * a.hidden,
        "hidden_act": a.activation or "gelu", "max_position_embeddings": a.positions,
        "type_vocab_size": a.type_vocab, "layer_norm_eps": a.eps if a.eps is not None else 1e-12,
        "pad_token_id": 0, "position_embedding_type": "absolute",
    }


def _store(x: np.ndarray, dtype: str):
    if x.dtype != np.float32:
        return x
    if dtype == "f16":
        return x.astype(np.float16)
    if dtype == "bf16":
        return safetensors_io.bf16(x)
    return x


def write(a) -> dict:
    rng = np.random.default_rng(a.seed)
    if a.family == "gpt2":
        t, cfg = gpt2_tensors(a, rng), gpt2_config(a)
        if a.lm_head:
            t["lm_head.weight"] = _rng_normal(rng, (a.vocab, a.hidden), 0.5)
        prefix = "transformer."
    else:
        t, cfg = bert_tensors(a, rng), bert_config(a)
        prefix = "bert."
    named = {}
    for k, v in t.items():
        if a.prefix and k != "lm_head.weight":
            k = prefix + k
        named[k] = _store(v, a.dtype)
    if a.family == "bert" and a.cls_head:
        named["cls.predictions.bias"] = _store(_rng_normal(rng, (a.vocab,), 0.1), a.dtype)
        named["cls.predictions.transform.dense.weight"] = _store(_rng_normal(rng, (a.hidden, a.hidden), 0.1), a.dtype)
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".json")):
            os.remove(os.path.join(a.out, f))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if a.shards <= 1:
        safetensors_io.save_file(named, os.path.join(a.out, "model.safetensors"))
    else:
        names = list(named)
        weight_map = {}
        for s in range(a.shards):
            fname = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
            part = {n: named[n] for n in names[s::a.shards]}
            safetensors_io.save_file(part, os.path.join(a.out, fname))
            weight_map.update({n: fname for n in part})
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    return cfg


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", choices=("gpt2", "bert"))
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--positions", type=int, default=64)
    ap.add_argument("--inner", type=int, default=None, help="feed-forward width (default 4 x hidden)")
    ap.add_argument("--type-vocab", type=int, default=2)
    ap.add_argument("--activation", default=None, help="gpt2: gelu_new (default); bert: gelu (default)")
    ap.add_argument("--eps", type=float, default=None)
    ap.add_argument("--inverse-layer-scale", action="store_true", help="gpt2: scale_attn_by_inverse_layer_idx")
    ap.add_argument("--prefix", action="store_true")
    ap.add_argument("--lm-head", action="store_true")
    ap.add_argument("--attn-bias-buffers", action="store_true")
    ap.add_argument("--old-names", action="store_true")
    ap.add_argument("--no-pooler", action="store_true")
    ap.add_argument("--position-ids-buffer", action="store_true")
    ap.add_argument("--cls-head", action="store_true")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    cfg = write(a)
    print(f"wrote {a.out}: {json.dumps(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
