#!/usr/bin/python3
"""Parity of Tessera's Hugging Face families (gpt2, bert) with the PyTorch references.

For each configuration in CASES: write a random-weight checkpoint in HF layout with
tools/make_hf_checkpoint.py (sizes, prefixes, old names, buffers, shards, f16/bf16 as the case
says), write random inputs (ragged attention masks: right padding, left padding, holes), run

    tessera run --model DIR --inputs IN.safetensors --outputs OUT.safetensors --threads 2

and compare with tools/hf_reference.py computed in float64 from the same directory. The
tolerance policy is tests/parity_test.py's: max absolute error 1e-4 (5e-4 for deep stacks),
outputs F32 and finite everywhere. Compared: gpt2 logits and bert last_hidden_state at real
(unpadded) positions, pooler_output of rows whose position 0 is real; bert's padded positions
must hold exactly zero (what Tessera defines, since padding is removed before the dense layers).

Every case runs with `tessera --passes all` and `--passes none`; the cases of PASS_SUBSET also
with each graph pass off alone (`--passes=-NAME`, the names read from tessera's error message for
an unknown pass). DECODE cases run (with TESSERA_PASSES=all and =none) tests/gpt2_decode_check (KV-cache decoding equals recomputation within 1e-5,
tokens identical, select_rows, limits) and compare its greedy tokens and logits with the
reference's own KV-cache greedy decoding. EMBED cases check `tessera embed`, INSPECT checks
`tessera inspect --graph` of both families. ERROR cases check
that bad checkpoints and inputs give one-line errors (exit 2) naming the tensor or key.

    hf_parity.py --tessera build/tools/tessera --decode-check build/tests/gpt2_decode_check
                 [--only NAME ...] [--workdir DIR] [--list]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import hf_reference  # noqa: E402
import make_hf_checkpoint  # noqa: E402
import safetensors_io  # noqa: E402


@dataclass
class Case:
    name: str
    family: str  # gpt2 | bert
    ckpt: dict  # make_hf_checkpoint options (layers, hidden, heads, vocab, positions, ...)
    B: int = 2
    T: int = 8
    mask: Optional[str] = None  # None | ones | right | left | holes
    token_types: bool = False
    tol: float = 1e-4
    seed: int = 0


def C(name, family, B, T, mask=None, token_types=False, tol=1e-4, **ckpt):
    return Case(name, family, ckpt, B=B, T=T, mask=mask, token_types=token_types, tol=tol)


CASES = [
    # gpt2: head_dim 12 (3 heads) and 20 (5 heads), 16 (4 heads); T 1..200
    C("gpt2_hd12_len1", "gpt2", B=1, T=1, layers=2, hidden=36, heads=3, vocab=97, positions=32),
    C("gpt2_hd20_right_pad_prefix_f16", "gpt2", B=3, T=37, mask="right", layers=3, hidden=100, heads=5,
      vocab=211, positions=64, prefix=True, dtype="f16"),
    C("gpt2_left_pad_untied_buffers_shards", "gpt2", B=4, T=20, mask="left", layers=2, hidden=48, heads=4,
      vocab=150, positions=40, lm_head=True, attn_bias_buffers=True, shards=3, prefix=True),
    C("gpt2_gelu_erf_inverse_scale_bf16", "gpt2", B=2, T=13, mask="holes", layers=2, hidden=60, heads=5,
      vocab=80, positions=16, activation="gelu", inverse_layer_scale=True, dtype="bf16", inner=100),
    C("gpt2_relu_len200_ones_mask", "gpt2", B=2, T=200, mask="ones", layers=2, hidden=64, heads=4,
      vocab=120, positions=256, activation="relu", eps=1e-6),
    C("gpt2_12_layers", "gpt2", B=2, T=24, mask="right", layers=12, hidden=48, heads=4, vocab=64,
      positions=32, tol=5e-4),
    # bert: no mask (batched graph) and masks (padding removed); one 512-long case
    C("bert_hd12_len1", "bert", B=1, T=1, layers=2, hidden=36, heads=3, vocab=97, positions=32),
    C("bert_hd20_right_pad_types_old_names_f16", "bert", B=4, T=29, mask="right", token_types=True, layers=3,
      hidden=100, heads=5, vocab=211, positions=64, prefix=True, old_names=True, dtype="f16",
      position_ids_buffer=True),
    C("bert_left_pad_no_pooler_shards_cls", "bert", B=3, T=17, mask="left", layers=2, hidden=48, heads=4,
      vocab=150, positions=32, no_pooler=True, shards=2, prefix=True, cls_head=True),
    C("bert_holes_gelu_new_bf16", "bert", B=2, T=11, mask="holes", token_types=True, layers=2, hidden=60, heads=5,
      vocab=80, positions=16, activation="gelu_new", dtype="bf16", type_vocab=3, eps=1e-5),
    C("bert_len512_ragged", "bert", B=2, T=512, mask="right", layers=2, hidden=64, heads=4, vocab=100,
      positions=512, inner=128),
    C("bert_batch4_no_mask_relu", "bert", B=4, T=33, layers=2, hidden=40, heads=2, vocab=50, positions=40,
      activation="relu"),
    C("bert_12_layers_ragged", "bert", B=3, T=21, mask="right", layers=12, hidden=48, heads=4, vocab=64,
      positions=32, tol=5e-4),
]
for _i, _c in enumerate(CASES):
    _c.seed = 2000 + _i

# Every case runs with `--passes all` and `--passes none`; these also run with each graph pass
# turned off alone (`--passes=-NAME`, the names read from tessera's error message): tied and
# untied heads, f32 (mapped) and f16/bf16 (converted) weights, every mask form, bert's batched
# graph and its padding-removal segments, the folded query scale.
PASS_SUBSET = ["gpt2_left_pad_untied_buffers_shards", "gpt2_gelu_erf_inverse_scale_bf16",
               "gpt2_relu_len200_ones_mask", "bert_hd20_right_pad_types_old_names_f16",
               "bert_left_pad_no_pooler_shards_cls", "bert_batch4_no_mask_relu"]


@dataclass
class Decode:
    name: str
    ckpt: dict
    prompts: list = field(default_factory=list)
    steps: int = 6
    tol: float = 1e-4


DECODES = [
    Decode("decode_hd12_ragged", dict(layers=2, hidden=36, heads=3, vocab=97, positions=40),
           prompts=[[5, 6, 7], [9], [1, 2, 3, 4, 5, 6, 7], [8, 8]], steps=8),
    Decode("decode_hd20_prefix_f16", dict(layers=3, hidden=100, heads=5, vocab=131, positions=64, prefix=True,
                                          dtype="f16"), prompts=[[3, 1, 4, 1, 5, 9, 2, 6], [5, 3]], steps=10),
    Decode("decode_batch1", dict(layers=2, hidden=48, heads=4, vocab=64, positions=32),
           prompts=[[1, 2, 3, 4]], steps=5),
]


def ckpt_args(family: str, out: str, opts: dict, seed: int):
    args = ["--seed", str(seed)]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        else:
            args += [flag, str(v)]
    return make_hf_checkpoint.parser().parse_args([family, out] + args)


def make_inputs(c: Case, rng: np.random.Generator, vocab: int, type_vocab: int):
    ids = rng.integers(0, vocab, (c.B, c.T)).astype(np.int64)
    inputs = {"input_ids": ids}
    real = np.ones((c.B, c.T), bool)
    if c.mask is not None:
        if c.mask in ("right", "left"):
            lengths = rng.integers(1, c.T + 1, c.B)
            lengths[rng.integers(0, c.B)] = c.T
            for b, n in enumerate(lengths):
                if c.mask == "right":
                    real[b, n:] = False
                else:
                    real[b, : c.T - n] = False
        elif c.mask == "holes":
            real = rng.random((c.B, c.T)) > 0.3
            real[:, 0] = True
        inputs["attention_mask"] = real.astype(np.int64)
    if c.token_types:
        inputs["token_type_ids"] = rng.integers(0, type_vocab, (c.B, c.T)).astype(np.int64)
    return inputs, real


def pass_names(tessera: str) -> list:
    """The pass names, from the error tessera prints for an unknown one (it lists them)."""
    p = subprocess.run([tessera, "--passes=-no_such_pass", "sysinfo"], capture_output=True, text=True)
    marker = "passes: "
    line = p.stderr.strip()
    if p.returncode != 2 or marker not in line:
        raise RuntimeError(f"cannot read the pass names from tessera: {line!r}")
    return [n.strip() for n in line.rsplit(marker, 1)[1].rstrip(")").split(",")]


def run_tessera(args, model_dir, inputs, cdir, spec="all"):
    in_path, out_path = os.path.join(cdir, "in.safetensors"), os.path.join(cdir, "out.safetensors")
    safetensors_io.save_file(inputs, in_path)
    if os.path.exists(out_path):
        os.remove(out_path)
    cmd = [args.tessera, f"--passes={spec}", "run", "--model", model_dir, "--inputs", in_path,
           "--outputs", out_path, "--threads", str(args.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"tessera exit {p.returncode}: {p.stderr.strip()[:200]}")
    return safetensors_io.load_file(out_path, with_dtypes=True)


def check_case(c: Case, args, workdir, specs=("all",)):
    """-> [(passes spec, problems, max error)] for each --passes spec (one reference run)."""
    cdir = os.path.join(workdir, c.name)
    os.makedirs(cdir, exist_ok=True)
    model_dir = os.path.join(cdir, "model")
    a = ckpt_args(c.family, model_dir, c.ckpt, c.seed)
    make_hf_checkpoint.write(a)
    rng = np.random.default_rng(c.seed)
    inputs, real = make_inputs(c, rng, a.vocab, a.type_vocab)
    ref = hf_reference.load(model_dir)
    if c.family == "gpt2":
        want_out = ref(inputs["input_ids"], inputs.get("attention_mask"))[0].numpy()
    else:
        want_out = ref(inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))
    results = []
    for spec in specs:
        try:
            outs, dts = run_tessera(args, model_dir, inputs, cdir, spec)
            problems, err = compare_case(c, outs, dts, want_out, real)
        except Exception as e:  # noqa: BLE001
            problems, err = [f"{type(e).__name__}: {e}"], float("nan")
        results.append((spec, problems, err))
    return results


def compare_case(c: Case, outs, dts, want_out, real):
    problems, errs = [], []
    def compare(name, got, want, rows):
        if name not in outs:
            problems.append(f"no output '{name}'")
            return
        if dts[name] != "F32":
            problems.append(f"{name} is {dts[name]}")
        if got.shape != want.shape:
            problems.append(f"{name} shape {list(got.shape)} != {list(want.shape)}")
            return
        if not np.isfinite(got).all():
            problems.append(f"{name} has non-finite values")
        d = np.abs(got.astype(np.float64) - want)[rows]
        errs.append(float(d.max()) if d.size else 0.0)

    if c.family == "gpt2":
        compare("logits", outs.get("logits"), want_out, real)
        if set(outs) != {"logits"}:
            problems.append(f"outputs {sorted(outs)}")
    else:
        hidden, pooled = want_out
        compare("last_hidden_state", outs.get("last_hidden_state"), hidden.numpy(), real)
        if "last_hidden_state" in outs and (~real).any():
            pad_vals = outs["last_hidden_state"][~real]
            if np.abs(pad_vals).max() != 0:
                problems.append("padded positions of last_hidden_state are not zero")
        if pooled is not None:
            compare("pooler_output", outs.get("pooler_output"), pooled.numpy(), real[:, 0])
        elif "pooler_output" in outs:
            problems.append("pooler_output without a pooler")
    max_err = max(errs) if errs else float("nan")
    if not (max_err <= c.tol):
        problems.append(f"max error {max_err:.3g} > tolerance {c.tol:g}")
    return problems, max_err


def check_decode(d: Decode, args, workdir, seed, spec="all"):
    cdir = os.path.join(workdir, d.name + "_" + spec)
    os.makedirs(cdir, exist_ok=True)
    model_dir = os.path.join(cdir, "model")
    make_hf_checkpoint.write(ckpt_args("gpt2", model_dir, d.ckpt, seed))
    out = os.path.join(cdir, "decode.safetensors")
    cmd = [args.decode_check, "--model", model_dir, "--steps", str(d.steps), "--outputs", out,
           "--threads", str(args.threads)] + [" ".join(map(str, p)) for p in d.prompts]
    env = dict(os.environ, TESSERA_PASSES=spec)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    problems = []
    cache_vs_recompute = float("nan")
    for line in p.stdout.splitlines():
        if line.startswith("greedy:") or line.startswith("select_rows:"):
            v = float(line.split("= ")[1].split(",")[0])
            cache_vs_recompute = v if cache_vs_recompute != cache_vs_recompute else max(cache_vs_recompute, v)
    if p.returncode != 0:
        problems.append(f"gpt2_decode_check exit {p.returncode}: "
                        + " | ".join((p.stdout + p.stderr).strip().splitlines()[-4:]))
        return problems, float("nan"), cache_vs_recompute
    got = safetensors_io.load_file(out)
    tokens, logits = hf_reference.greedy(hf_reference.load(model_dir), d.prompts, d.steps)
    if not np.array_equal(got["tokens"], tokens.numpy()):
        problems.append(f"tokens differ from the reference: {got['tokens'].tolist()} vs {tokens.tolist()}")
    err = float(np.abs(got["logits"].astype(np.float64) - logits.numpy()).max())
    if not (err <= d.tol):
        problems.append(f"logits vs reference {err:.3g} > {d.tol:g}")
    return problems, err, cache_vs_recompute


# ---------------------------------------------------------------------------------------------
# embed and errors
# ---------------------------------------------------------------------------------------------
def check_embed(args, workdir):
    problems = []
    model_dir = os.path.join(workdir, "embed_model")
    make_hf_checkpoint.write(ckpt_args("bert", model_dir, dict(layers=2, hidden=40, heads=5, vocab=60,
                                                               positions=32), 77))
    seqs = [[2, 5, 9, 3], [2, 7, 3], [2, 11, 12, 13, 14, 3]]
    ref = hf_reference.load(model_dir)
    worst = 0.0
    for pooling in ("cls", "mean", "pooler"):
        for normalize in (False, True):
            cmd = [args.tessera, "embed", "--model", model_dir, "--ids", "--pooling", pooling, "--threads",
                   str(args.threads)] + (["--normalize"] if normalize else [])
            p = subprocess.run(cmd, input="\n".join(" ".join(map(str, s)) for s in seqs) + "\n",
                               capture_output=True, text=True, timeout=args.timeout)
            if p.returncode != 0:
                problems.append(f"embed {pooling}: exit {p.returncode}: {p.stderr.strip()[:150]}")
                continue
            lines = [json.loads(x) for x in p.stdout.splitlines()]
            if len(lines) != len(seqs) or "tokens" not in p.stderr:
                problems.append(f"embed {pooling}: {len(lines)} lines, stderr {p.stderr.strip()!r}")
                continue
            for i, s in enumerate(seqs):
                hidden, pooled = ref(np.array([s]))
                want = {"cls": hidden[0, 0], "mean": hidden[0].mean(0), "pooler": pooled[0]}[pooling].numpy()
                if normalize:
                    want = want / np.linalg.norm(want)
                got = np.array(lines[i]["embedding"])
                if lines[i]["index"] != i or lines[i]["tokens"] != len(s):
                    problems.append(f"embed line {i}: {lines[i]['index']}, {lines[i]['tokens']}")
                worst = max(worst, float(np.abs(got - want).max()))
    if worst > 1e-4:
        problems.append(f"embed max error {worst:.3g}")

    # Text input: the model directory's vocab.txt (bert-base-uncased's) tokenizes the reference
    # cases of tests/data/tokenizers; each vector must equal the reference's for [CLS] ids [SEP].
    data = os.path.join(_ROOT, "tests", "data", "tokenizers", "bert")
    text_dir = os.path.join(workdir, "embed_text_model")
    make_hf_checkpoint.write(ckpt_args("bert", text_dir, dict(layers=1, hidden=24, heads=3, vocab=30522,
                                                              positions=64), 78))
    shutil.copy(os.path.join(data, "vocab.txt"), text_dir)
    with open(os.path.join(data, "cases.jsonl")) as f:
        cases = [json.loads(x) for x in f if x.strip()]
    cases = [c for c in cases if c["ids"] and "\n" not in c["text"] and len(c["ids"]) < 60][:6]
    p = subprocess.run([args.tessera, "embed", "--model", text_dir, "--pooling", "mean", "--threads",
                        str(args.threads)] + [c["text"] for c in cases],
                       capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        problems.append(f"embed text: exit {p.returncode}: {p.stderr.strip()[:150]}")
    else:
        ref = hf_reference.load(text_dir)
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        for c, line in zip(cases, lines):
            ids = [101] + c["ids"] + [102]
            want = ref(np.array([ids]))[0][0].mean(0).numpy()
            err = float(np.abs(np.array(line["embedding"]) - want).max())
            worst = max(worst, err)
            if line["tokens"] != len(ids) or err > 1e-4:
                problems.append(f"embed text {c['text']!r}: {line['tokens']} tokens (want {len(ids)}), "
                                f"error {err:.3g}")
        if len(lines) != len(cases):
            problems.append(f"embed text: {len(lines)} lines for {len(cases)} texts")
    return problems, worst


def check_errors(args, workdir):
    """-> list of problems. Each case: exit 2, one line on stderr, naming the given words."""
    problems = []
    base = os.path.join(workdir, "err_base")
    base_b = os.path.join(workdir, "err_base_bert")
    make_hf_checkpoint.write(ckpt_args("gpt2", base, dict(layers=2, hidden=24, heads=2, vocab=30, positions=16), 5))
    make_hf_checkpoint.write(ckpt_args("bert", base_b, dict(layers=2, hidden=24, heads=2, vocab=30, positions=16,
                                                            prefix=True), 6))
    ok_in = {"input_ids": np.array([[1, 2, 3]], np.int64)}

    def variant(src, name, edit_tensors=None, edit_config=None):
        d = os.path.join(workdir, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        if edit_tensors:
            path = os.path.join(d, "model.safetensors")
            t = safetensors_io.load_file(path)
            edit_tensors(t)
            safetensors_io.save_file(t, path)
        if edit_config:
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            edit_config(cfg)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
        return d

    def expect(name, model_dir, inputs, words):
        cdir = os.path.join(workdir, name + "_io")
        os.makedirs(cdir, exist_ok=True)
        in_path, out_path = os.path.join(cdir, "in.safetensors"), os.path.join(cdir, "out.safetensors")
        safetensors_io.save_file(inputs, in_path)
        p = subprocess.run([args.tessera, "run", "--model", model_dir, "--inputs", in_path, "--outputs",
                            out_path], capture_output=True, text=True, timeout=args.timeout)
        lines = p.stderr.strip().splitlines()
        msg = lines[-1] if lines else ""
        bad = []
        if p.returncode != 2:
            bad.append(f"exit {p.returncode}")
        if len(lines) != 1:
            bad.append(f"{len(lines)} stderr lines")
        if os.path.exists(out_path):
            bad.append("wrote outputs")
        bad += [f"message lacks {w!r}" for w in words if w not in msg]
        print(f"  {name:40s} {'ok  ' if not bad else 'FAIL'} {msg[:150]}")
        if bad:
            problems.append(f"{name}: {', '.join(bad)}")

    def drop(name):
        return lambda t: t.pop(name)

    expect("gpt2_missing_tensor", variant(base, "g_missing", drop("h.1.mlp.c_fc.bias")), ok_in,
           ["h.1.mlp.c_fc.bias"])

    def transpose(t):
        t["h.0.attn.c_attn.weight"] = np.ascontiguousarray(t["h.0.attn.c_attn.weight"].T)
    expect("gpt2_conv1d_transposed", variant(base, "g_transposed", transpose), ok_in,
           ["h.0.attn.c_attn.weight", "[24, 72]"])

    def extra(t):
        t["h.0.attn.extra_weight"] = np.zeros(3, np.float32)
    expect("gpt2_unexpected_tensor", variant(base, "g_extra", extra), ok_in, ["h.0.attn.extra_weight"])
    expect("gpt2_config_heads", variant(base, "g_heads", edit_config=lambda c: c.update(n_head=5)), ok_in,
           ["config.json", "n_head"])
    expect("gpt2_config_more_layers", variant(base, "g_layers", edit_config=lambda c: c.update(n_layer=3)), ok_in,
           ["h.2.ln_1.weight"])
    expect("gpt2_config_activation", variant(base, "g_act", edit_config=lambda c: c.update(
        activation_function="swish")), ok_in, ["activation_function", "swish"])
    expect("gpt2_too_long", base, {"input_ids": np.zeros((1, 17), np.int64)}, ["input_ids", "n_positions", "16"])
    expect("gpt2_id_past_vocab", base, {"input_ids": np.array([[1, 30]], np.int64)}, ["input_ids", "vocab_size"])
    expect("gpt2_mask_shape", base, {"input_ids": np.array([[1, 2]], np.int64),
                                     "attention_mask": np.ones((1, 3), np.int64)}, ["attention_mask"])
    expect("gpt2_mask_value", base, {"input_ids": np.array([[1, 2]], np.int64),
                                     "attention_mask": np.array([[1, 2]], np.int64)}, ["attention_mask"])
    expect("gpt2_unknown_input", base, {"input_ids": np.array([[1, 2]], np.int64),
                                        "token_type_ids": np.zeros((1, 2), np.int64)}, ["token_type_ids"])
    expect("bert_missing_tensor", variant(base_b, "b_missing", drop("bert.encoder.layer.1.output.LayerNorm.bias")),
           ok_in, ["bert.encoder.layer.1.output.LayerNorm.bias"])

    def bad_q(t):
        t["bert.encoder.layer.0.attention.self.query.weight"] = np.zeros((24, 23), np.float32)
    expect("bert_wrong_shape", variant(base_b, "b_shape", bad_q), ok_in,
           ["bert.encoder.layer.0.attention.self.query.weight", "[24, 24]"])
    expect("bert_config_missing_key", variant(base_b, "b_key", edit_config=lambda c: c.pop("hidden_size")), ok_in,
           ["config.json", "hidden_size"])
    expect("bert_config_positions", variant(base_b, "b_pos", edit_config=lambda c: c.update(
        max_position_embeddings=20)), ok_in, ["bert.embeddings.position_embeddings.weight", "[20, 24]"])
    expect("bert_type_id_range", base_b, {"input_ids": np.array([[1, 2]], np.int64),
                                          "token_type_ids": np.array([[0, 2]], np.int64)},
           ["token_type_ids", "type_vocab_size"])
    expect("bert_ids_dtype", base_b, {"input_ids": np.array([[1, 2]], np.int32)}, ["input_ids", "I64"])
    expect("unknown_model_type", variant(base_b, "b_type", edit_config=lambda c: c.update(model_type="t5")), ok_in,
           ["model_type", "t5"])
    return problems


def check_inspect(args, workdir):
    """`tessera inspect --graph` for both families: nodes with shapes, arena size, --dot, and fewer
    nodes after the passes than before."""
    problems = []
    for family, opts in (("gpt2", dict(layers=2, hidden=24, heads=2, vocab=30, positions=16)),
                         ("bert", dict(layers=2, hidden=24, heads=2, vocab=30, positions=16, prefix=True))):
        model_dir = os.path.join(workdir, "inspect_" + family)
        make_hf_checkpoint.write(ckpt_args(family, model_dir, opts, 9))
        nodes = {}
        for spec in ("all", "none"):
            dot = os.path.join(workdir, f"inspect_{family}_{spec}.dot")
            p = subprocess.run([args.tessera, f"--passes={spec}", "inspect", "--model", model_dir, "--graph",
                                "--batch", "2", "--seq", "5", "--dot", dot],
                               capture_output=True, text=True, timeout=args.timeout)
            out = p.stdout
            head = "forward graph (batch 2, seq 5): "
            if p.returncode != 0 or head not in out or "arena bytes: " not in out:
                problems.append(f"inspect {family} --passes {spec}: exit {p.returncode}: "
                                f"{(p.stderr or out).strip()[-150:]}")
                continue
            nodes[spec] = int(out.split(head, 1)[1].split()[0])
            want_shape = "[2, 5, 30]" if family == "gpt2" else "[2, 5, 24]"
            if want_shape not in out:
                problems.append(f"inspect {family} --passes {spec}: no output of shape {want_shape}")
            with open(dot) as f:
                if not f.read().startswith("digraph"):
                    problems.append(f"inspect {family}: --dot is not Graphviz")
        if len(nodes) == 2 and not nodes["all"] < nodes["none"]:
            problems.append(f"inspect {family}: {nodes['all']} nodes after passes, {nodes['none']} before")
        print(f"  inspect {family}: {nodes.get('none')} nodes before passes, {nodes.get('all')} after")
    return problems


def summary(c: Case) -> str:
    k = c.ckpt
    extras = [x for x in ("prefix", "old_names", "lm_head", "attn_bias_buffers", "no_pooler", "cls_head",
                          "position_ids_buffer", "inverse_layer_scale") if k.get(x)]
    if k.get("shards", 1) > 1:
        extras.append(f"shards{k['shards']}")
    hd = k["hidden"] // k["heads"]
    return (f"L{k['layers']} E{k['hidden']} h{k['heads']} hd{hd} V{k['vocab']} P{k['positions']} "
            f"{k.get('activation', 'default')} {k.get('dtype', 'f32')} B{c.B} T{c.T} mask:{c.mask or '-'}"
            + (" types" if c.token_types else "") + (" " + ",".join(extras) if extras else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Parity of tessera's gpt2/bert families with PyTorch references.")
    ap.add_argument("--tessera", required=False)
    ap.add_argument("--decode-check", help="path to gpt2_decode_check (decode cases skipped without it)")
    ap.add_argument("--workdir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    names = [c.name for c in CASES] + [d.name for d in DECODES] + ["embed", "inspect", "errors"]
    if args.list:
        for c in CASES:
            print(f"{c.name:42s} {c.family:5s} {summary(c)}  tol {c.tol:g}")
        for d in DECODES:
            print(f"{d.name:42s} gpt2  decode {d.ckpt} prompts {d.prompts} steps {d.steps}")
        print("embed\ninspect\nerrors")
        return 0
    if not args.tessera:
        ap.error("--tessera is required")
    args.tessera = os.path.abspath(args.tessera)
    if args.decode_check:
        args.decode_check = os.path.abspath(args.decode_check)
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            ap.error(f"unknown case(s) {sorted(unknown)}; see --list")
    want = (lambda n: not args.only or n in args.only)
    torch.set_num_threads(args.threads)
    keep = bool(args.workdir)
    workdir = os.path.abspath(args.workdir) if keep else tempfile.mkdtemp(prefix="tessera-hf-parity-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    failed = total = 0
    try:
        names = pass_names(args.tessera)
        print(f"{'case':42s} {'family':6s} {'passes':22s} {'configuration':84s} {'max|err|':>9s} {'tol':>7s}  "
              "result")
        for c in CASES:
            if not want(c.name):
                continue
            specs = ["all", "none"] + (["-" + n for n in names] if c.name in PASS_SUBSET else [])
            try:
                results = check_case(c, args, workdir, specs)
            except Exception as e:  # noqa: BLE001
                results = [(spec, [f"{type(e).__name__}: {e}"], float("nan")) for spec in specs]
            for spec, problems, err in results:
                total += 1
                failed += bool(problems)
                print(f"{c.name:42s} {c.family:6s} {spec:22s} {summary(c):84s} {err:9.2e} {c.tol:7.0e}  "
                      f"{'FAIL  ' + '; '.join(problems) if problems else 'PASS'}", flush=True)
        for i, d in enumerate(DECODES):
            if not want(d.name):
                continue
            if not args.decode_check:
                total += 1
                print(f"{d.name:42s} skipped (no --decode-check)")
                continue
            for spec in ("all", "none"):  # TESSERA_PASSES for gpt2_decode_check
                total += 1
                try:
                    problems, err, cvr = check_decode(d, args, workdir, 3000 + i, spec)
                except Exception as e:  # noqa: BLE001
                    problems, err, cvr = [f"{type(e).__name__}: {e}"], float("nan"), float("nan")
                failed += bool(problems)
                desc = (f"decode {len(d.prompts)} prompts x {d.steps} steps; cache vs recompute {cvr:.2e} "
                        f"(tol 1e-05 x logit scale), vs reference")
                print(f"{d.name:42s} {'gpt2':6s} {spec:22s} {desc:84s} {err:9.2e} {d.tol:7.0e}  "
                      f"{'FAIL  ' + '; '.join(problems) if problems else 'PASS'}", flush=True)
        if want("embed"):
            total += 1
            problems, err = check_embed(args, workdir)
            failed += bool(problems)
            print(f"{'embed':42s} {'bert':6s} {'tessera embed --ids, cls/mean/pooler, with/without --normalize; text':84s} "
                  f"{err:9.2e} {1e-4:7.0e}  {'FAIL  ' + '; '.join(problems) if problems else 'PASS'}", flush=True)
        if want("inspect"):
            total += 1
            problems = check_inspect(args, workdir)
            failed += bool(problems)
            print(f"{'inspect':42s} {'both':6s} {'tessera inspect --graph --dot, passes all/none':84s}"
                  f"{'':18s}  {'FAIL  ' + '; '.join(problems) if problems else 'PASS'}", flush=True)
        if want("errors"):
            total += 1
            print("errors (bad checkpoints and inputs: exit 2, one line naming the tensor/key):")
            problems = check_errors(args, workdir)
            failed += bool(problems)
            print(f"{'errors':42s} {'FAIL  ' + '; '.join(problems) if problems else 'PASS'}")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{total - failed}/{total} cases passed in {time.time() - t0:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
