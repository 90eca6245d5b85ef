#!/usr/bin/python3
"""Reduced-precision GEMM weights end to end through the `tessera` CLI (--dtype, tessera quantize).

Random models of every family (gpt2 tied and untied with a scaled c_attn, bert, an nn.Transformer
with and without token embeddings, rnn_attention), written by tools/make_hf_checkpoint.py and
tools/export_torch.py, then:

* accuracy: `tessera --dtype bf16|int8 run` is finite and within G x u of the f32 output,
  relative to max |f32 output|, where u is the relative rounding of one GEMM's operands (bf16:
  weights and activations each rounded to 8 significant bits, 2^-9 each, u = 2^-8; int8: weights
  to 1/254 of their channel's max and activations to 1/510 of their row's range, u = 2^-7) and G
  the GEMMs in series on the longest path. An estimate (rounding errors add up roughly like
  independent ones and the norms rescale), not a bound; the measured ratios are printed.
* quantize: `tessera quantize --dtype T` then `run` (no --dtype) writes the same bytes as
  `run --dtype T` on the original; a bf16 checkpoint run as bf16 from its bits equals its f32
  widening run as bf16; `--passes none` and `generate` work on a quantized directory.
* threads: 1, 2 and 3 threads give bit-identical outputs in every dtype.
* inspect: the stored and compute columns and the header's weight dtype; bench and profile
  headers name the dtype.
* errors: every validation of a quantized directory (missing, misshapen, non-F32, non-finite or
  non-positive scales, an I8 tensor that is no GEMM weight, --dtype f32/bf16 on an int8
  directory, I8 without --dtype int8, an unknown --dtype) and of quantize (an --out that is not
  empty, an input already quantized) exits 2 with one line on stderr naming it; quantize leaves
  nothing behind.

    lowp_cli.py --tessera build/tools/tessera [--keep DIR]

Prints one line per check (PASS/FAIL and the numbers); exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import safetensors_io  # noqa: E402
from export_torch import export_model  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402
from tessera_torch import TokenTransformer  # noqa: E402

PY = sys.executable
MAKE_HF = os.path.join(_ROOT, "tools", "make_hf_checkpoint.py")
U = {"bf16": 2.0 ** -8, "int8": 2.0 ** -7}
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                     "terminate called", "Segmentation fault")


class Model:
    def __init__(self, name, path, inputs, gemms):
        self.name, self.path, self.inputs, self.gemms = name, path, inputs, gemms


def write_inputs(path, tensors):
    safetensors_io.save_file(tensors, path)
    return path


def make_models(work) -> list:
    rng = np.random.default_rng(5)
    models = []
    # gpt2, tied head: wte is the embedding table and the LM head's matrix (one int8 copy).
    d = os.path.join(work, "gpt2")
    subprocess.run([PY, MAKE_HF, "gpt2", d, "--layers", "2", "--hidden", "48", "--heads", "4", "--vocab", "97",
                    "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    ids = rng.integers(0, 97, (2, 7)).astype(np.int64)
    models.append(Model("gpt2", d, write_inputs(os.path.join(work, "gpt2_in.safetensors"), {"input_ids": ids}),
                        4 * 2 + 1))
    # gpt2, untied lm_head, prefixed names, 1/(layer+1) attention scaling folded into a scaled copy
    # of layer 1's c_attn (kept f32 by quantize: converted at load).
    d = os.path.join(work, "gpt2_scaled")
    subprocess.run([PY, MAKE_HF, "gpt2", d, "--layers", "2", "--hidden", "40", "--heads", "5", "--vocab", "61",
                    "--lm-head", "--prefix", "--inverse-layer-scale", "--seed", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    ids = rng.integers(0, 61, (2, 5)).astype(np.int64)
    models.append(Model("gpt2_scaled", d,
                        write_inputs(os.path.join(work, "gpt2s_in.safetensors"), {"input_ids": ids}), 4 * 2 + 1))
    # bert: q/k/v joined into one projection at load (in int8 too); a ragged batch.
    d = os.path.join(work, "bert")
    subprocess.run([PY, MAKE_HF, "bert", d, "--layers", "2", "--hidden", "48", "--heads", "4", "--vocab", "89",
                    "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    ids = rng.integers(0, 89, (2, 9)).astype(np.int64)
    mask = np.ones((2, 9), np.int64)
    mask[1, 6:] = 0
    models.append(Model("bert", d, write_inputs(os.path.join(work, "bert_in.safetensors"),
                                                {"input_ids": ids, "attention_mask": mask}), 4 * 2 + 1))
    # nn.Transformer with token embeddings and a generator (in_proj_weight rows -> q, k, v).
    torch.manual_seed(4)
    tok = TokenTransformer(23, 29, d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=64, max_position=32).eval()
    d = os.path.join(work, "transformer")
    export_model(tok, d)
    models.append(Model("transformer", d, write_inputs(os.path.join(work, "tr_in.safetensors"), {
        "src_ids": rng.integers(3, 23, (2, 6)).astype(np.int64),
        "tgt_ids": rng.integers(3, 29, (2, 5)).astype(np.int64)}), 4 * 2 + 6 * 2 + 1))
    # A plain nn.Transformer (float inputs), pre-LN, GELU.
    torch.manual_seed(5)
    plain = nn.Transformer(24, 3, 1, 2, 40, dropout=0.0, activation="gelu", batch_first=True,
                           norm_first=True).eval()
    d = os.path.join(work, "transformer_plain")
    export_model(plain, d)
    models.append(Model("transformer_plain", d, write_inputs(os.path.join(work, "trp_in.safetensors"), {
        "src": rng.standard_normal((2, 5, 24)).astype(np.float32),
        "tgt": rng.standard_normal((2, 4, 24)).astype(np.float32)}), 4 * 1 + 6 * 2))
    # rnn_attention: its input projections, bridge, attention and generator are GEMMs; W_hh stays f32.
    torch.manual_seed(6)
    rnn = RNNAttention(cell="gru", embed_dim=16, hidden_size=24, num_encoder_layers=2, attention_dim=12,
                       src_vocab_size=19, tgt_vocab_size=19, max_length=16).eval()
    d = os.path.join(work, "rnn")
    export_model(rnn, d)
    models.append(Model("rnn", d, write_inputs(os.path.join(work, "rnn_in.safetensors"), {
        "src_ids": rng.integers(3, 19, (2, 7)).astype(np.int64),
        "tgt_ids": rng.integers(3, 19, (2, 6)).astype(np.int64)}), 2 + 1 + 2 + 1 + 1))
    return models


class Suite:
    def __init__(self, tessera, work):
        self.bin, self.work, self.failures, self.count = tessera, work, 0, 0

    def check(self, name, ok, detail=""):
        self.count += 1
        if not ok:
            self.failures += 1
        print(f"{'PASS' if ok else 'FAIL'}  {name:58s} {detail}", flush=True)
        return ok

    def tessera(self, *args, timeout=300):
        return subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=timeout)

    def run(self, model_dir, inputs, out, *extra, threads=2):
        p = self.tessera(*extra, "run", "--model", model_dir, "--inputs", inputs, "--outputs", out,
                         "--threads", str(threads))
        if p.returncode != 0:
            raise AssertionError(f"tessera {' '.join(extra)} run --model {model_dir}: exit {p.returncode}: "
                                 f"{p.stderr.strip()}")
        with open(out, "rb") as f:
            return f.read()

    def fails(self, name, args, words, leave=None):
        """`tessera ARGS` must exit 2 with one line on stderr holding every word, no sanitizer
        report; `leave` (a path) must not exist afterwards."""
        p = self.tessera(*args)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        msg = lines[0] if lines else ""
        ok = (p.returncode == 2 and len(lines) == 1 and all(w in msg for w in words)
              and not any(m in p.stderr for m in SANITIZER_MARKERS))
        if leave is not None:
            ok = ok and not os.path.exists(leave)
        return self.check(name, ok, f"exit {p.returncode}: {msg[:150]}")


def outputs(blob_path):
    return safetensors_io.load_file(blob_path)


def accuracy(s: Suite, m: Model):
    f32 = s.run(m.path, m.inputs, os.path.join(s.work, f"{m.name}_f32.safetensors"))
    ref = outputs(os.path.join(s.work, f"{m.name}_f32.safetensors"))
    for dt in ("bf16", "int8"):
        path = os.path.join(s.work, f"{m.name}_{dt}.safetensors")
        s.run(m.path, m.inputs, path, "--dtype", dt)
        got = outputs(path)
        tol = m.gemms * U[dt]
        parts, ok = [], set(got) == set(ref)
        for name, r in ref.items():
            g = got[name]
            scale = float(np.abs(r).max()) or 1.0
            err = float(np.abs(g.astype(np.float64) - r).max()) / scale
            ok = ok and bool(np.isfinite(g).all()) and err <= tol
            parts.append(f"{name} {err:.2e}")
        s.check(f"{m.name}: --dtype {dt} close to f32", ok,
                f"max|d|/max|y| {', '.join(parts)} (tolerance {m.gemms} x 2^{int(np.log2(U[dt]))} = {tol:.3f})")
    return f32


def quantized_equal(s: Suite, m: Model):
    for dt in ("bf16", "int8"):
        q = os.path.join(s.work, f"{m.name}_q{dt}")
        p = s.tessera("--dtype", dt, "quantize", "--model", m.path, "--out", q)
        if not s.check(f"{m.name}: quantize --dtype {dt}", p.returncode == 0,
                       (p.stdout.strip() or p.stderr.strip())[:160]):
            continue
        want = s.run(m.path, m.inputs, os.path.join(s.work, f"{m.name}_{dt}_t2.safetensors"), "--dtype", dt)
        got = s.run(q, m.inputs, os.path.join(s.work, f"{m.name}_q{dt}_out.safetensors"))
        s.check(f"{m.name}: quantized {dt} directory == --dtype {dt}", got == want,
                f"{len(got)} bytes {'identical' if got == want else 'DIFFER'}")
        # Threads: 1, 2, 3 give the same bytes (the load-time conversion and the directory alike).
        outs = [s.run(m.path, m.inputs, os.path.join(s.work, f"{m.name}_{dt}_t{t}.safetensors"), "--dtype", dt,
                      threads=t) for t in (1, 2, 3)]
        s.check(f"{m.name}: {dt} threads 1/2/3 bit-identical", outs[0] == outs[1] == outs[2] == want)
    outs = [s.run(m.path, m.inputs, os.path.join(s.work, f"{m.name}_f32_t{t}.safetensors"), threads=t)
            for t in (1, 2, 3)]
    s.check(f"{m.name}: f32 threads 1/2/3 bit-identical", outs[0] == outs[1] == outs[2])


def bf16_checkpoint(s: Suite):
    """A bf16 checkpoint run as bf16 packs its bits directly: equal to its f32 widening run as
    bf16 (which rounds each widened value back to the same bits) and to its quantize output."""
    d = os.path.join(s.work, "gpt2_bf16ckpt")
    subprocess.run([PY, MAKE_HF, "gpt2", d, "--layers", "2", "--hidden", "32", "--heads", "4", "--vocab", "53",
                    "--dtype", "bf16", "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
    wide = os.path.join(s.work, "gpt2_bf16wide")
    shutil.copytree(d, wide)
    st = os.path.join(wide, "model.safetensors")
    safetensors_io.save_file(safetensors_io.load_file(st), st)  # BF16 expanded to F32, exactly
    inputs = write_inputs(os.path.join(s.work, "bf16_in.safetensors"),
                          {"input_ids": np.array([[3, 9, 27, 4], [50, 1, 2, 8]], np.int64)})
    a = s.run(d, inputs, os.path.join(s.work, "bf16ckpt.safetensors"), "--dtype", "bf16")
    b = s.run(wide, inputs, os.path.join(s.work, "bf16wide.safetensors"), "--dtype", "bf16")
    q = os.path.join(s.work, "gpt2_bf16ckpt_q")
    s.tessera("--dtype", "bf16", "quantize", "--model", d, "--out", q)
    c = s.run(q, inputs, os.path.join(s.work, "bf16ckpt_q.safetensors"))
    s.check("bf16 checkpoint --dtype bf16 == its f32 widening --dtype bf16", a == b)
    s.check("bf16 checkpoint quantize --dtype bf16 == --dtype bf16", a == c)
    # export_torch.py --dtype bf16 (an nn.Transformer) the same way.
    torch.manual_seed(8)
    plain = nn.Transformer(16, 2, 1, 1, 24, dropout=0.0, batch_first=True).eval()
    e = os.path.join(s.work, "tr_bf16")
    export_model(plain, e, dtype="bf16")
    ew = os.path.join(s.work, "tr_bf16wide")
    shutil.copytree(e, ew)
    st = os.path.join(ew, "model.safetensors")
    safetensors_io.save_file(safetensors_io.load_file(st), st)
    rng = np.random.default_rng(9)
    inp = write_inputs(os.path.join(s.work, "trb_in.safetensors"), {
        "src": rng.standard_normal((1, 4, 16)).astype(np.float32),
        "tgt": rng.standard_normal((1, 3, 16)).astype(np.float32)})
    a = s.run(e, inp, os.path.join(s.work, "trb_a.safetensors"), "--dtype", "bf16")
    b = s.run(ew, inp, os.path.join(s.work, "trb_b.safetensors"), "--dtype", "bf16")
    s.check("export_torch --dtype bf16 transformer: bits == widening (bf16)", a == b)


def quantized_use(s: Suite, gpt2: Model):
    q = os.path.join(s.work, "gpt2_qint8")
    # --passes none: the executor packs per call, the tied table is packed by finalize.
    base = outputs(os.path.join(s.work, "gpt2_qint8_out.safetensors"))
    path = os.path.join(s.work, "gpt2_q_nopass.safetensors")
    s.run(q, gpt2.inputs, path, "--passes", "none")
    got = outputs(path)["logits"]
    err = float(np.abs(got - base["logits"]).max() / np.abs(base["logits"]).max())
    s.check("gpt2 int8 directory --passes none", np.isfinite(got).all() and err < 1e-5, f"max|d|/max|y| {err:.1e}")
    # generate (KV-cache decode graphs) on the directory equals --dtype int8 on the original.
    gen = ["generate", "--ids", "--max-new-tokens", "6", "--threads", "2", "5 17 3"]
    a = s.tessera(*gen[:1], "--model", q, *gen[1:])
    b = s.tessera("--dtype", "int8", *gen[:1], "--model", gpt2.path, *gen[1:])
    s.check("gpt2 generate: int8 directory == --dtype int8", a.returncode == 0 and a.stdout == b.stdout,
            a.stdout.strip()[:60] or a.stderr.strip()[:100])
    # inspect: stored and compute columns, the header.
    p = s.tessera("inspect", "--model", q)
    rows = {ln.split()[0]: ln.split()[1:3] for ln in p.stdout.splitlines() if ln.startswith("  ") and
            len(ln.split()) >= 4}
    ok = (p.returncode == 0 and "weights: int8 GEMMs" in p.stdout and "stored: int8" in p.stdout
          and rows.get("h.0.mlp.c_fc.weight") == ["I8", "int8"]
          and rows.get("h.0.mlp.c_fc.weight.scale") == ["F32", "f32"]
          and rows.get("wte.weight") == ["I8", "int8"] and rows.get("ln_f.weight") == ["F32", "f32"])
    s.check("inspect int8 directory: stored/compute columns", ok,
            f"c_fc {rows.get('h.0.mlp.c_fc.weight')}, wte {rows.get('wte.weight')}, ln_f {rows.get('ln_f.weight')}")
    p = s.tessera("--dtype", "bf16", "inspect", "--model", gpt2.path)
    rows = {ln.split()[0]: ln.split()[1:3] for ln in p.stdout.splitlines() if ln.startswith("  ") and
            len(ln.split()) >= 4}
    ok = (p.returncode == 0 and "weights: bf16 GEMMs" in p.stdout
          and rows.get("h.1.attn.c_attn.weight") == ["F32", "bf16"] and rows.get("wpe.weight") == ["F32", "f32"])
    s.check("inspect --dtype bf16 f32 directory", ok, f"c_attn {rows.get('h.1.attn.c_attn.weight')}")
    p = s.tessera("inspect", "--model", os.path.join(s.work, "rnn_qint8"))
    rows = {ln.split()[0]: ln.split()[1:3] for ln in p.stdout.splitlines() if ln.startswith("  ") and
            len(ln.split()) >= 4}
    s.check("inspect rnn int8: W_ih int8, W_hh f32",
            rows.get("encoder.weight_ih_l0") == ["I8", "int8"] and rows.get("encoder.weight_hh_l0") == ["F32", "f32"],
            f"ih {rows.get('encoder.weight_ih_l0')}, hh {rows.get('encoder.weight_hh_l0')}")
    # The scaled c_attn of gpt2_scaled's layer 1 stays F32 in its quantized directory.
    p = s.tessera("inspect", "--model", os.path.join(s.work, "gpt2_scaled_qint8"))
    rows = {ln.split()[0]: ln.split()[1:3] for ln in p.stdout.splitlines() if ln.startswith("  ") and
            len(ln.split()) >= 4}
    s.check("gpt2_scaled int8: layer 1 c_attn kept F32 (scaled at load)",
            rows.get("transformer.h.1.attn.c_attn.weight") == ["F32", "int8"]
            and rows.get("transformer.h.0.attn.c_attn.weight") == ["I8", "int8"],
            f"h.0 {rows.get('transformer.h.0.attn.c_attn.weight')}, h.1 {rows.get('transformer.h.1.attn.c_attn.weight')}")
    # bench and profile headers.
    p = s.tessera("bench", "--model", q, "--batch", "1", "--seq", "8", "--reps", "1", "--warmup", "0")
    s.check("bench header names the dtype", p.returncode == 0 and "int8 weights" in p.stdout.splitlines()[0],
            p.stdout.splitlines()[0][:120] if p.stdout else p.stderr.strip())
    p = s.tessera("--dtype", "bf16", "profile", "--model", gpt2.path, "--batch", "1", "--seq", "8", "--reps", "1",
                  "--json")
    dt = json.loads(p.stdout).get("dtype") if p.returncode == 0 else p.stderr.strip()
    s.check("profile --json names the dtype", dt == "bf16", str(dt))


def corrupt(s: Suite, name, src, edit):
    """A copy of quantized directory src with model.safetensors edited by edit(tensors)."""
    d = os.path.join(s.work, "bad_" + name)
    shutil.copytree(src, d)
    st = os.path.join(d, "model.safetensors")
    t = safetensors_io.load_file(st)
    edit(t)
    safetensors_io.save_file(t, st)
    return d


def errors(s: Suite, gpt2: Model, bert: Model):
    q = os.path.join(s.work, "gpt2_qint8")
    out = os.path.join(s.work, "err_out.safetensors")
    run = ["run", "--inputs", gpt2.inputs, "--outputs", out]
    w = "h.0.mlp.c_fc.weight"

    def drop(t):
        del t[w + ".scale"]

    def reshape(t):
        t[w + ".scale"] = t[w + ".scale"][:-1]

    def half(t):
        t[w + ".scale"] = t[w + ".scale"].astype(np.float16)

    def nan(t):
        t[w + ".scale"][3] = np.nan

    def zero(t):
        t[w + ".scale"][5] = 0.0

    def negative(t):
        t[w + ".scale"][0] = -0.25

    def wpe(t):  # a positional table (read as f32) stored as int8
        t["wpe.weight"] = np.clip(np.round(t["wpe.weight"] * 100), -127, 127).astype(np.int8)
        t["wpe.weight.scale"] = np.full(t["wpe.weight"].shape[0], 0.01, np.float32)

    for name, edit, words in [
            ("missing_scale", drop, [f"'{w}'", "no", f"'{w}.scale'"]),
            ("scale_shape", reshape, [f"'{w}.scale'", "has shape [191]", "expected [192]"]),
            ("scale_f16", half, [f"'{w}.scale'", "dtype F16", "expected F32"]),
            ("scale_nan", nan, [f"'{w}.scale'", "output channel 3", "nan", "finite and > 0"]),
            ("scale_zero", zero, [f"'{w}.scale'", "output channel 5", "is 0", "finite and > 0"]),
            ("scale_negative", negative, [f"'{w}.scale'", "output channel 0", "-0.25"]),
            ("i8_not_gemm", wpe, ["'wpe.weight'", "I8", "not a GEMM weight"])]:
        d = corrupt(s, name, q, edit)
        s.fails(f"error: {name}", [*run[:1], "--model", d, *run[1:]], words, leave=out)
    # An I8 embedding table (bert's word embeddings: a table, never a GEMM) is refused at load.
    bq = os.path.join(s.work, "bert_qint8")

    def words_i8(t):
        n = "embeddings.word_embeddings.weight"
        t[n] = np.clip(np.round(t[n] * 50), -127, 127).astype(np.int8)
        t[n + ".scale"] = np.full(t[n].shape[0], 0.02, np.float32)
    d = corrupt(s, "bert_table_i8", bq, words_i8)
    s.fails("error: I8 embedding table", ["run", "--model", d, "--inputs", bert.inputs, "--outputs", out],
            ["'embeddings.word_embeddings.weight'", "I8", "not a GEMM weight"], leave=out)
    for dt in ("f32", "bf16"):
        s.fails(f"error: --dtype {dt} on an int8 directory", ["--dtype", dt, *run[:1], "--model", q, *run[1:]],
                ["holds int8 weights", f"not as {dt}"], leave=out)
    # I8 weights without the directory's tessera_dtype: only --dtype int8 loads them.
    d = os.path.join(s.work, "bad_no_tessera_dtype")
    shutil.copytree(q, d)
    cfg = os.path.join(d, "config.json")
    c = json.load(open(cfg))
    del c["tessera_dtype"]
    json.dump(c, open(cfg, "w"))
    s.fails("error: I8 weights loaded as f32", [*run[:1], "--model", d, *run[1:]], ["is I8", "--dtype int8"],
            leave=out)
    p = s.tessera("--dtype", "int8", *run[:1], "--model", d, *run[1:])
    s.check("I8 weights without tessera_dtype load with --dtype int8", p.returncode == 0 and
            open(out, "rb").read() == open(os.path.join(s.work, "gpt2_qint8_out.safetensors"), "rb").read())
    os.remove(out)
    s.fails("error: unknown --dtype", ["--dtype", "fp8", *run[:1], "--model", gpt2.path, *run[1:]],
            ["--dtype", "'fp8'", "f32, bf16 or int8"], leave=out)
    c["tessera_dtype"] = "int4"
    json.dump(c, open(cfg, "w"))
    s.fails("error: unknown tessera_dtype in config.json", [*run[:1], "--model", d, *run[1:]],
            ["tessera_dtype 'int4'", "config.json"], leave=out)
    # quantize: refusals leave nothing behind.
    taken = os.path.join(s.work, "taken")
    os.makedirs(taken)
    open(os.path.join(taken, "x"), "w").close()
    s.fails("error: quantize --out not empty", ["--dtype", "int8", "quantize", "--model", gpt2.path, "--out", taken],
            ["'" + taken + "'", "not an empty directory"])
    fresh = os.path.join(s.work, "never")
    s.fails("error: quantize an int8 directory", ["--dtype", "int8", "quantize", "--model", q, "--out", fresh],
            ["already holds int8"], leave=fresh)
    s.fails("error: quantize without --dtype", ["quantize", "--model", gpt2.path, "--out", fresh],
            ["--dtype bf16 or --dtype int8"], leave=fresh)
    d = os.path.join(s.work, "gpt2_nan")
    shutil.copytree(gpt2.path, d)
    st = os.path.join(d, "model.safetensors")
    t = safetensors_io.load_file(st)
    t["h.1.mlp.c_proj.weight"][2, 7] = np.inf
    safetensors_io.save_file(t, st)
    s.fails("error: quantize a non-finite weight", ["--dtype", "int8", "quantize", "--model", d, "--out", fresh],
            ["'h.1.mlp.c_proj.weight'", "not finite"], leave=fresh)
    leftovers = [f for f in os.listdir(s.work) if ".tmp." in f]
    s.check("quantize leaves no temporary directory", not leftovers, ", ".join(leftovers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--keep", help="work in this directory and keep it")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="tessera_lowp_")
    if a.keep:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    s = Suite(os.path.abspath(a.tessera), work)
    try:
        models = make_models(work)
        for m in models:
            accuracy(s, m)
            quantized_equal(s, m)
        by = {m.name: m for m in models}
        bf16_checkpoint(s)
        quantized_use(s, by["gpt2"])
        errors(s, by["gpt2"], by["bert"])
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{s.count - s.failures} of {s.count} checks passed")
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
