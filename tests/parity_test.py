#!/usr/bin/python3
"""Parity of `tessera run` with PyTorch's nn.Transformer family on random models.

For each configuration in CONFIGS (seeded with torch.manual_seed): build the PyTorch module
(nn.TransformerEncoder / nn.TransformerDecoder / nn.Transformer / TokenTransformer, all
batch_first=True, dropout off), perturb every bias and every LayerNorm weight so none is
trivially 0 or 1, round the weights through the export dtype (f16/bf16 configs), export the
model directory with tools/export_torch.py, write the inputs (tensors and masks) as
safetensors, run

    tessera run --model DIR --inputs IN.safetensors --outputs OUT.safetensors --threads 2

and compare `output` (or `logits`) with PyTorch. One table row per configuration; exit code 1
if any configuration fails or tessera fails.

The PyTorch reference is computed with gradients enabled and parameters requiring grad, which
keeps PyTorch 1.13 off its inference fast paths (nested tensors, fused kernels) so that it is the
plain nn.MultiheadAttention math. Rows that PyTorch leaves NaN (a query whose keys are all
masked; the engine defines them as a zero attention output) are excluded from the comparison and
counted; the configurations built to have such rows must have some, every other configuration
must have none, and the engine's output must be finite everywhere.

    parity_test.py --tessera build/tools/tessera [--workdir DIR] [--only NAME ...] [--dry-run]

--dry-run skips tessera: it checks the PyTorch side alone (the reference recomputed from the
exported files and the written inputs must equal the original reference exactly).

Graph passes: every configuration runs with `--passes all` and `--passes none`; the configurations
in PASS_SUBSET also run with each pass off alone (`--passes=-NAME`, the pass names read from
tessera's own error message, so a new pass is covered without editing this file). One row per
(configuration, passes). `--passes SPEC` runs only that one setting.
"""
from __future__ import annotations

import argparse
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
import torch.nn as nn  # noqa: E402

import safetensors_io  # noqa: E402
from export_torch import export_model, round_state_dict  # noqa: E402
from tessera_torch import TokenTransformer, load_state_dict_from_dir  # noqa: E402

ENC, DEC, S2S, TOK = "encoder", "decoder", "seq2seq", "token"


@dataclass
class Config:
    name: str
    kind: str  # encoder | decoder | seq2seq | token
    d: int
    h: int
    enc: int = 0
    dec: int = 0
    ff: int = 64
    act: str = "relu"
    norm_first: bool = False
    eps: float = 1e-5
    final_norm: bool = True  # bare encoder/decoder stacks only
    B: int = 2
    S: int = 8  # source / memory length
    T: int = 6  # target length
    dtype: str = "f32"
    tol: float = 1e-4
    # masks: None or one of causal_float, causal_bool, rand_bool, rand_float,
    # rand_bool_3d, rand_float_3d, full_row_bool (a fully masked query row)
    src_mask: Optional[str] = None
    tgt_mask: Optional[str] = None
    memory_mask: Optional[str] = None
    # key padding: None, "ragged" (bool), "ragged_u8" (u8 to tessera, bool to torch),
    # "same" (memory only: the source's padding)
    src_kpm: Optional[str] = None
    tgt_kpm: Optional[str] = None
    memory_kpm: Optional[str] = None
    expect_nan_rows: bool = False
    src_vocab: int = 0
    tgt_vocab: int = 0
    max_position: int = 64
    scale_embedding: bool = True
    seed: int = 0
    extra: dict = field(default_factory=dict)


CONFIGS = [
    Config("enc_post_relu_plain", ENC, d=32, h=4, enc=2, ff=64, final_norm=False, B=2, S=7),
    Config("enc_pre_gelu_norm_kpm", ENC, d=36, h=6, enc=3, ff=80, act="gelu", norm_first=True, eps=1e-6,
           B=3, S=17, src_kpm="ragged"),
    Config("enc_odd_causal_float_kpm", ENC, d=15, h=3, enc=2, ff=31, B=2, S=11, src_mask="causal_float",
           src_kpm="ragged"),
    Config("enc_len200_h16", ENC, d=64, h=16, enc=2, ff=128, act="gelu", norm_first=True, B=2, S=200,
           src_kpm="ragged"),
    Config("enc_12_layers", ENC, d=48, h=4, enc=12, ff=96, B=2, S=24, src_mask="causal_bool",
           src_kpm="ragged_u8", tol=5e-4),
    Config("enc_h5_3d_bool_mask", ENC, d=40, h=5, enc=2, ff=64, act="gelu", eps=1e-4, final_norm=False,
           B=3, S=13, src_mask="rand_bool_3d", src_kpm="ragged"),
    Config("enc_h1_len1_rand_float", ENC, d=24, h=1, enc=1, ff=48, norm_first=True, B=4, S=1,
           src_mask="rand_float"),
    Config("enc_1layer_full_row", ENC, d=20, h=4, enc=1, ff=40, B=2, S=9, src_mask="full_row_bool",
           src_kpm="ragged", expect_nan_rows=True),
    Config("dec_post_causal_bool", DEC, d=32, h=4, dec=2, ff=64, B=2, T=6, S=9, tgt_mask="causal_bool",
           memory_kpm="ragged"),
    Config("dec_d200_h5_len1", DEC, d=200, h=5, dec=1, ff=256, act="gelu", norm_first=True, final_norm=False,
           B=1, T=1, S=1),
    Config("dec_float_masks_eps1e-3", DEC, d=30, h=3, dec=2, ff=50, eps=1e-3, B=3, T=8, S=12,
           tgt_mask="rand_float", memory_mask="rand_float", tgt_kpm="ragged", memory_kpm="ragged"),
    Config("dec_pre_3d_memory_mask", DEC, d=24, h=4, dec=3, ff=40, act="gelu", norm_first=True, B=2, T=10,
           S=7, tgt_mask="causal_float", memory_mask="rand_bool_3d", tgt_kpm="ragged"),
    Config("dec_1layer_full_memory_row", DEC, d=16, h=2, dec=1, ff=32, norm_first=True, B=3, T=5, S=6,
           memory_mask="full_row_bool", memory_kpm="ragged", expect_nan_rows=True),
    Config("s2s_post_relu", S2S, d=32, h=4, enc=2, dec=2, ff=64, B=2, S=10, T=8, tgt_mask="causal_float",
           src_kpm="ragged", memory_kpm="same"),
    Config("s2s_pre_gelu_ragged", S2S, d=36, h=6, enc=3, dec=3, ff=72, act="gelu", norm_first=True, eps=1e-6,
           B=4, S=15, T=9, tgt_mask="causal_bool", src_kpm="ragged", tgt_kpm="ragged", memory_kpm="same"),
    Config("s2s_odd_src_kpm_only", S2S, d=15, h=3, enc=1, dec=1, ff=17, B=3, S=6, T=5, src_kpm="ragged"),
    Config("s2s_f16_weights", S2S, d=64, h=8, enc=2, dec=2, ff=128, B=2, S=12, T=7, dtype="f16",
           tgt_mask="causal_float", src_kpm="ragged", memory_kpm="same"),
    Config("s2s_bf16_weights", S2S, d=48, h=6, enc=2, dec=2, ff=96, act="gelu", norm_first=True, B=2, S=9,
           T=9, dtype="bf16", tgt_mask="causal_float", memory_mask="rand_float"),
    Config("s2s_len200_3d_float", S2S, d=40, h=4, enc=2, dec=2, ff=64, B=2, S=200, T=40,
           tgt_mask="causal_float", memory_mask="rand_float_3d", src_kpm="ragged", memory_kpm="same"),
    Config("s2s_6_layers", S2S, d=64, h=8, enc=6, dec=6, ff=128, act="gelu", B=2, S=16, T=12,
           src_mask="rand_bool", tgt_mask="causal_bool", src_kpm="ragged", memory_kpm="same"),
    Config("s2s_1dec_full_tgt_row", S2S, d=24, h=3, enc=2, dec=1, ff=48, norm_first=True, B=2, S=8, T=6,
           tgt_mask="full_row_bool", src_kpm="ragged", memory_kpm="same", expect_nan_rows=True),
    Config("tok_post_relu", TOK, d=32, h=4, enc=2, dec=2, ff=64, B=3, S=12, T=9, src_vocab=50, tgt_vocab=60,
           tgt_mask="causal_bool", src_kpm="ragged", memory_kpm="same"),
    Config("tok_pre_gelu_noscale_maxlen", TOK, d=36, h=6, enc=2, dec=1, ff=72, act="gelu", norm_first=True,
           B=2, S=40, T=40, src_vocab=37, tgt_vocab=41, max_position=40, scale_embedding=False,
           tgt_mask="causal_float", tgt_kpm="ragged", src_kpm="ragged", memory_kpm="same"),
    Config("tok_h1_bf16", TOK, d=16, h=1, enc=1, dec=2, ff=32, B=1, S=5, T=4, src_vocab=30, tgt_vocab=30,
           dtype="bf16", tgt_mask="causal_bool"),
    Config("tok_h12_f16_u8_kpm", TOK, d=48, h=12, enc=2, dec=2, ff=96, B=4, S=20, T=15, src_vocab=70,
           tgt_vocab=65, dtype="f16", tgt_mask="causal_float", src_kpm="ragged_u8", memory_kpm="same"),
]
for _i, _c in enumerate(CONFIGS):
    _c.seed = 1000 + _i


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
def build_module(c: Config) -> nn.Module:
    kw = dict(dim_feedforward=c.ff, dropout=0.0, activation=c.act, layer_norm_eps=c.eps, batch_first=True,
              norm_first=c.norm_first)
    if c.kind == ENC:
        norm = nn.LayerNorm(c.d, eps=c.eps) if c.final_norm else None
        return nn.TransformerEncoder(nn.TransformerEncoderLayer(c.d, c.h, **kw), c.enc, norm=norm)
    if c.kind == DEC:
        norm = nn.LayerNorm(c.d, eps=c.eps) if c.final_norm else None
        return nn.TransformerDecoder(nn.TransformerDecoderLayer(c.d, c.h, **kw), c.dec, norm=norm)
    if c.kind == S2S:
        return nn.Transformer(c.d, c.h, c.enc, c.dec, **kw)
    if c.kind == TOK:
        return TokenTransformer(c.src_vocab, c.tgt_vocab, d_model=c.d, nhead=c.h, num_encoder_layers=c.enc,
                                num_decoder_layers=c.dec, dim_feedforward=c.ff, dropout=0.0, activation=c.act,
                                layer_norm_eps=c.eps, norm_first=c.norm_first, max_position=c.max_position,
                                scale_embedding=c.scale_embedding)
    raise ValueError(c.kind)


def perturb(module: nn.Module) -> None:
    """Random biases everywhere and LayerNorm weights away from 1 (PyTorch initializes the
    attention biases to 0 and LayerNorm to 1/0, which would hide a missing term)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_norm = ".norm" in "." + name and "embed" not in name
            if leaf == "bias":
                p.add_(0.2 * torch.randn_like(p))
            elif is_norm and leaf == "weight":
                p.copy_(1.0 + 0.3 * torch.randn_like(p))


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def ragged_lengths(b: int, n: int) -> np.ndarray:
    lengths = torch.randint(1, n + 1, (b,)).numpy()
    lengths[int(torch.randint(0, b, (1,)))] = n  # the batch is as long as its longest row
    return lengths


def key_padding(kind: Optional[str], b: int, n: int, same=None):
    """-> (tensor for tessera or None, bool array for torch or None)."""
    if kind is None:
        return None, None
    if kind == "same":
        return same
    lengths = ragged_lengths(b, n)
    pad = np.arange(n)[None, :] >= lengths[:, None]
    if kind == "ragged":
        return pad.copy(), pad
    if kind == "ragged_u8":
        return pad.astype(np.uint8), pad
    raise ValueError(kind)


def attn_mask(kind: Optional[str], c: Config, rows: int, cols: int):
    """A mask of the given kind; never masks key 0 (never padding) unless asked for a full row."""
    if kind is None:
        return None
    if kind == "causal_float":
        assert rows == cols
        return nn.Transformer.generate_square_subsequent_mask(rows).numpy()
    if kind == "causal_bool":
        assert rows == cols
        return np.triu(np.ones((rows, cols), dtype=bool), k=1)
    three_d = kind.endswith("_3d")
    shape = (c.B * c.h, rows, cols) if three_d else (rows, cols)
    if kind.startswith("rand_bool") or kind == "full_row_bool":
        m = (torch.rand(shape) < 0.35).numpy()
        m[..., 0] = False
        if kind == "full_row_bool":
            m[int(torch.randint(0, rows, (1,)))] = True
        return m
    if kind.startswith("rand_float"):
        return (2.0 * torch.randn(shape)).numpy().astype(np.float32)
    raise ValueError(kind)


def make_inputs(c: Config):
    """-> (inputs for tessera: name -> np array, inputs for torch: name -> np array)."""
    tess, ref = {}, {}
    has_src = c.kind in (ENC, S2S, TOK)
    has_tgt = c.kind in (DEC, S2S, TOK)
    src_pad = key_padding(c.src_kpm, c.B, c.S) if has_src else (None, None)
    if c.kind == TOK:
        ids = torch.randint(4, c.src_vocab, (c.B, c.S)).numpy()
        if src_pad[1] is not None:
            ids[src_pad[1]] = 0
        tess["src_ids"] = ids.astype(np.int64)
        tess["tgt_ids"] = torch.randint(0, c.tgt_vocab, (c.B, c.T)).numpy().astype(np.int64)
    else:
        if has_src:
            tess["src"] = torch.randn(c.B, c.S, c.d).numpy()
        if has_tgt:
            tess["tgt"] = torch.randn(c.B, c.T, c.d).numpy()
        if c.kind == DEC:
            tess["memory"] = torch.randn(c.B, c.S, c.d).numpy()
    masks = {
        "src_mask": attn_mask(c.src_mask, c, c.S, c.S) if has_src else None,
        "tgt_mask": attn_mask(c.tgt_mask, c, c.T, c.T) if has_tgt else None,
        "memory_mask": attn_mask(c.memory_mask, c, c.T, c.S) if has_tgt else None,
    }
    pads = {
        "src_key_padding_mask": src_pad,
        "tgt_key_padding_mask": key_padding(c.tgt_kpm, c.B, c.T) if has_tgt else (None, None),
        "memory_key_padding_mask": key_padding(c.memory_kpm, c.B, c.S, same=src_pad) if has_tgt else (None, None),
    }
    ref.update(tess)
    for k, v in masks.items():
        if v is not None:
            tess[k] = v
            ref[k] = v
    for k, (tv, rv) in pads.items():
        if tv is not None:
            tess[k] = tv
            ref[k] = rv
    return tess, ref


# ---------------------------------------------------------------------------------------------
# reference
# ---------------------------------------------------------------------------------------------
def reference(module: nn.Module, kind: str, inputs: dict) -> np.ndarray:
    """PyTorch's output on the plain math path (grad enabled, parameters requiring grad)."""
    t = {}
    for k, v in inputs.items():
        v = torch.from_numpy(np.ascontiguousarray(v))
        if k.endswith("key_padding_mask") and v.dtype == torch.uint8:
            v = v.bool()  # PyTorch 1.13 accepts only bool/float key padding masks
        t[k] = v
    g = t.get
    module.eval()
    for p in module.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        if kind == ENC:
            out = module(t["src"], mask=g("src_mask"), src_key_padding_mask=g("src_key_padding_mask"))
        elif kind == DEC:
            out = module(t["tgt"], t["memory"], tgt_mask=g("tgt_mask"), memory_mask=g("memory_mask"),
                         tgt_key_padding_mask=g("tgt_key_padding_mask"),
                         memory_key_padding_mask=g("memory_key_padding_mask"))
        else:
            a, b = ("src_ids", "tgt_ids") if kind == TOK else ("src", "tgt")
            out = module(t[a], t[b], src_mask=g("src_mask"), tgt_mask=g("tgt_mask"),
                         memory_mask=g("memory_mask"), src_key_padding_mask=g("src_key_padding_mask"),
                         tgt_key_padding_mask=g("tgt_key_padding_mask"),
                         memory_key_padding_mask=g("memory_key_padding_mask"))
    return out.detach().numpy()


def reload_module(c: Config, model_dir: str) -> nn.Module:
    """A freshly built module of configuration ``c`` with the weights read back from the exported
    model directory (fresh: non-exported buffers, e.g. the positional table, are recomputed)."""
    kind = c.kind
    m = build_module(c)
    sd = load_state_dict_from_dir(model_dir)
    prefix = {ENC: "encoder.", DEC: "decoder."}.get(kind, "")
    m.load_state_dict({k[len(prefix):]: v for k, v in sd.items()}, strict=True)
    return m


def summary(c: Config) -> str:
    layers = {ENC: f"E{c.enc}", DEC: f"D{c.dec}", S2S: f"E{c.enc}D{c.dec}", TOK: f"E{c.enc}D{c.dec}"}[c.kind]
    ln = "pre" if c.norm_first else "post"
    masks = []
    for k in ("src_mask", "tgt_mask", "memory_mask", "src_kpm", "tgt_kpm", "memory_kpm"):
        v = getattr(c, k)
        if v:
            masks.append(f"{k.replace('_mask', '').replace('memory', 'mem')}:{v}")
    norm = "" if c.kind not in (ENC, DEC) or c.final_norm else " nonorm"
    return (f"{c.kind} d{c.d} h{c.h} {layers} ff{c.ff} {c.act} {ln}{norm} eps{c.eps:g} B{c.B} S{c.S}"
            + (f" T{c.T}" if c.kind != ENC else "") + f" {c.dtype} " + (" ".join(masks) or "nomask"))


# ---------------------------------------------------------------------------------------------
# Configurations that also run with each graph pass turned off alone: every kind, pre- and
# post-LN, masks of every form, the KV-less cross-attention and f16/bf16 weights.
PASS_SUBSET = ["enc_pre_gelu_norm_kpm", "enc_odd_causal_float_kpm", "dec_pre_3d_memory_mask",
               "s2s_post_relu", "s2s_pre_gelu_ragged", "tok_post_relu", "tok_h12_f16_u8_kpm"]


def pass_names(tessera: str) -> list:
    """The pass names, from the error tessera prints for an unknown one (it lists them)."""
    p = subprocess.run([tessera, "--passes=-no_such_pass", "sysinfo"], capture_output=True, text=True)
    marker = "passes: "
    line = p.stderr.strip()
    if p.returncode != 2 or marker not in line:
        raise RuntimeError(f"cannot read the pass names from tessera: {line!r}")
    return [n.strip() for n in line.rsplit(marker, 1)[1].rstrip(")").split(",")]


def run_config(c: Config, args, workdir: str, specs=("all",)):
    """-> [(passes spec, ok, row fields)] for each --passes spec."""
    torch.manual_seed(c.seed)
    module = build_module(c)
    perturb(module)
    round_state_dict(module, c.dtype)
    module.eval()
    tess_inputs, ref_inputs = make_inputs(c)
    ref = reference(module, c.kind, ref_inputs)

    cdir = os.path.join(workdir, c.name)
    shutil.rmtree(cdir, ignore_errors=True)
    os.makedirs(cdir)
    model_dir = os.path.join(cdir, "model")
    export_model(module, model_dir, dtype=c.dtype)
    in_path = os.path.join(cdir, "inputs.safetensors")
    out_path = os.path.join(cdir, "outputs.safetensors")
    safetensors_io.save_file(tess_inputs, in_path)
    out_name = "logits" if c.kind == TOK else "output"

    finite_rows = np.isfinite(ref).all(axis=-1)
    excluded = int((~finite_rows).sum())
    total = int(finite_rows.size)
    problems = []
    if c.expect_nan_rows and not (0 < excluded < total):
        problems.append(f"expected some (not all) NaN rows in PyTorch, got {excluded}/{total}")
    if not c.expect_nan_rows and excluded:
        problems.append(f"PyTorch produced {excluded} unexpected NaN rows")

    if args.dry_run:
        # The PyTorch side alone: the files we wrote must reproduce the reference exactly.
        back = safetensors_io.load_file(in_path)
        for k in back:
            if k.endswith("key_padding_mask"):
                back[k] = back[k].astype(bool)
        out = reference(reload_module(c, model_dir), c.kind, back)
        if set(back) != set(tess_inputs):
            problems.append("inputs read back differ in names")
        return [("-",) + compare(out, ref, finite_rows, excluded, problems, 0.0)]

    rows = []
    for spec in specs:
        rows.append((spec,) + run_tessera(c, args, model_dir, in_path, out_path, out_name, spec, ref,
                                          finite_rows, excluded, list(problems)))
    if not args.keep:
        shutil.rmtree(cdir, ignore_errors=True)
    return rows


def compare(out, ref, finite_rows, excluded, problems, tol):
    """-> (ok, row fields) for tessera's (or the reloaded reference's) output."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))[finite_rows]
    max_err = float(diff.max()) if diff.size else 0.0
    mean_err = float(diff.mean()) if diff.size else 0.0
    if not np.isfinite(max_err) or max_err > tol:
        problems.append(f"max error {max_err:.3g} > tolerance {tol:g}")
    return not problems, ("; ".join(problems), max_err, mean_err, excluded)


def run_tessera(c, args, model_dir, in_path, out_path, out_name, spec, ref, finite_rows, excluded,
                problems):
    cmd = [args.tessera, f"--passes={spec}", "run", "--model", model_dir, "--inputs", in_path,
           "--outputs", out_path, "--threads", str(args.threads)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return False, (f"tessera timed out after {args.timeout}s", None, None, excluded)
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return False, (f"tessera exit {p.returncode}: {err[:150]}", None, None, excluded)
    try:
        outs, dts = safetensors_io.load_file(out_path, with_dtypes=True)
    except Exception as e:  # noqa: BLE001
        return False, (f"cannot read outputs: {e}", None, None, excluded)
    if out_name not in outs:
        return False, (f"outputs lack '{out_name}' (have {sorted(outs)})", None, None, excluded)
    out = outs[out_name]
    if dts[out_name] != "F32":
        problems.append(f"{out_name} is {dts[out_name]}, expected F32")
    if out.shape != ref.shape:
        return False, (f"{out_name} shape {list(out.shape)} != expected {list(ref.shape)}", None, None,
                       excluded)
    if not np.isfinite(out).all():
        problems.append(f"{int((~np.isfinite(out)).sum())} non-finite values in tessera's output")
    return compare(out, ref, finite_rows, excluded, problems, c.tol)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Parity of `tessera run` with PyTorch nn.Transformer modules.")
    ap.add_argument("--tessera", help="path to the tessera binary (required unless --dry-run)")
    ap.add_argument("--workdir", help="where to write model dirs and inputs/outputs (kept); "
                                      "default: a temporary directory, removed afterwards")
    ap.add_argument("--threads", type=int, default=2, help="--threads for tessera and torch (default 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per tessera run (default 300)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations")
    ap.add_argument("--list", action="store_true", help="list the configurations and exit")
    ap.add_argument("--passes", metavar="SPEC",
                    help="run tessera with this --passes value only (default: all and none for every "
                         "configuration, each pass off alone for PASS_SUBSET)")
    ap.add_argument("--dry-run", action="store_true",
                    help="skip tessera; check the reference against the exported files instead")
    args = ap.parse_args(argv)

    if args.list:
        for c in CONFIGS:
            print(f"{c.name:30s} {summary(c)}  tol {c.tol:g}")
        return 0
    if not args.dry_run:
        if not args.tessera:
            ap.error("--tessera is required (or use --dry-run)")
        if not (os.path.isfile(args.tessera) and os.access(args.tessera, os.X_OK)):
            print(f"parity_test.py: {args.tessera} is not an executable file", file=sys.stderr)
            return 1
        args.tessera = os.path.abspath(args.tessera)
    torch.set_num_threads(args.threads)
    configs = CONFIGS
    if args.only:
        unknown = set(args.only) - {c.name for c in CONFIGS}
        if unknown:
            ap.error(f"unknown configuration(s) {sorted(unknown)}; see --list")
        configs = [c for c in CONFIGS if c.name in args.only]

    names = [] if args.dry_run or args.passes else pass_names(args.tessera)

    def specs_for(c):
        if args.passes:
            return [args.passes]
        specs = ["all", "none"]
        if c.name in PASS_SUBSET:
            specs += [f"-{n}" for n in names]
        return specs

    args.keep = bool(args.workdir)
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="tessera-parity-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    failed = 0
    total_rows = 0
    header = (f"{'config':30s} {'passes':20s} {'summary':92s} {'max|err|':>9s} {'mean|err|':>9s} {'tol':>7s} "
              f"{'nan rows':>8s}  result")
    print(header)
    print("-" * len(header))
    try:
        for c in configs:
            try:
                rows = run_config(c, args, workdir, specs_for(c))
            except Exception as e:  # noqa: BLE001  (a broken config must not hide the others)
                rows = [("?", False, (f"{type(e).__name__}: {e}", None, None, 0))]
            for spec, ok, (msg, max_err, mean_err, excluded) in rows:
                failed += not ok
                total_rows += 1
                fmt = (lambda x: f"{x:9.2e}" if x is not None else f"{'-':>9s}")
                status = ("DRY-OK" if args.dry_run else "PASS") if ok else "FAIL"
                print(f"{c.name:30s} {spec:20s} {summary(c):92s} {fmt(max_err)} {fmt(mean_err)} {c.tol:7.0e} "
                      f"{excluded:8d}  {status}{'  ' + msg if msg else ''}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{total_rows - failed}/{total_rows} runs ({len(configs)} configurations x passes settings) passed "
          f"in {time.time() - t0:.1f}s" + (" (dry run: tessera not run)" if args.dry_run else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
