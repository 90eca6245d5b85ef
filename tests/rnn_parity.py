#!/usr/bin/python3
"""Parity of the `rnn_attention` family with its reference module (tools/rnn_attention.py).

For each configuration in CONFIGS (seeded): build RNNAttention, spread its parameters (every
weight uniform in [-0.5, 0.5] so the gates are not all near 0.5 and tanh is exercised beyond its
small range), round them through the export dtype (f16/bf16 configurations), export the model
directory with tools/export_torch.py, and

1. run `tessera run` on a ragged right-padded batch (with src_key_padding_mask, or padding read
   from pad_id) and compare `logits` and `attention` with RNNAttention.forward (max abs error
   <= tol, 1e-4);
2. run `tessera generate --ids` (greedy, the sources ragged in one batch) and compare with
   RNNAttention.greedy token for token.

One table row per configuration; exit code 1 if any fails.

    rnn_parity.py --tessera build/tools/tessera [--workdir DIR] [--only NAME ...] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safetensors_io  # noqa: E402
from export_torch import export_model, round_state_dict  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402


@dataclass
class Config:
    name: str
    cell: str = "gru"
    E: int = 16
    H: int = 24
    L: int = 1
    A: int = 12
    attention: str = "additive"
    Vs: int = 23
    Vt: int = 19
    lengths: tuple = (7, 3, 5)  # real source tokens per row (the batch is right-padded)
    T: int = 6
    dtype: str = "f32"
    mask: bool = True  # give src_key_padding_mask (else padding is src_ids == pad_id)
    tol: float = 1e-4
    greedy_new: int = 12


CONFIGS = [
    Config("gru_small"),
    Config("lstm_small", cell="lstm"),
    Config("gru_odd_7_9_5", E=7, H=9, A=5, lengths=(5, 1, 4, 2)),
    Config("lstm_odd_7_9_5", cell="lstm", E=7, H=9, A=5, lengths=(1, 6)),
    Config("gru_2layers", L=2, lengths=(9, 9, 4)),
    Config("lstm_3layers", cell="lstm", L=3, H=17, lengths=(3, 8)),
    Config("gru_none", attention="none"),
    Config("lstm_none_2layers", cell="lstm", attention="none", L=2),
    Config("gru_f16", dtype="f16", E=13, H=33, A=31),
    Config("lstm_bf16", cell="lstm", dtype="bf16", E=11, H=20, A=3),
    Config("gru_pad_ids", mask=False, lengths=(4, 6, 2)),
    Config("lstm_pad_ids_3layers_none", cell="lstm", mask=False, L=3, attention="none"),
    Config("gru_batch1", lengths=(11,), T=9),
    Config("gru_wide_3layers", E=40, H=67, L=3, A=45, Vs=50, Vt=61, lengths=(12, 5, 1, 9, 12), T=8),
    Config("lstm_wide_bf16", cell="lstm", E=33, H=129, A=65, Vt=70, dtype="bf16", lengths=(17, 2)),
    Config("gru_h1", E=1, H=1, A=1, lengths=(3, 2)),
]


def build(c: Config) -> RNNAttention:
    torch.manual_seed(zlib.crc32(c.name.encode()) % 10007)  # stable across processes
    m = RNNAttention(cell=c.cell, embed_dim=c.E, hidden_size=c.H, num_encoder_layers=c.L,
                     attention_dim=c.A, attention=c.attention, src_vocab_size=c.Vs,
                     tgt_vocab_size=c.Vt, bos_id=1, eos_id=2, pad_id=0, max_length=40)
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.5, 0.5)
    m.eval()
    round_state_dict(m, c.dtype)
    return m


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def check(c: Config, tessera: str, work: str, threads: int):
    m = build(c)
    d = os.path.join(work, c.name)
    export_model(m, d, dtype=c.dtype)
    g = torch.Generator().manual_seed(7)
    B, S = len(c.lengths), max(c.lengths)
    src = torch.randint(3, c.Vs, (B, S), generator=g)
    pad = torch.ones(B, S, dtype=torch.bool)
    for b, n in enumerate(c.lengths):
        pad[b, :n] = False
    src[pad] = 0
    tgt = torch.randint(3, c.Vt, (B, c.T), generator=g)
    tgt[:, 0] = 1
    with torch.no_grad():
        ref_logits, ref_att = m(src, tgt, pad if c.mask else None)
    inputs = {"src_ids": src.numpy(), "tgt_ids": tgt.numpy()}
    if c.mask:
        inputs["src_key_padding_mask"] = pad.numpy()
    in_path, out_path = os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")
    safetensors_io.save_file(inputs, in_path)
    run([tessera, "run", "--model", d, "--inputs", in_path, "--outputs", out_path,
         "--threads", str(threads)])
    out = safetensors_io.load_file(out_path)
    err_l = float(np.abs(out["logits"] - ref_logits.numpy()).max())
    err_a = float(np.abs(out["attention"] - ref_att.numpy()).max())
    # Greedy generation of the same (ragged) sources.
    sources = [src[b, :n].tolist() for b, n in enumerate(c.lengths)]
    want = m.greedy(sources, max_new_tokens=c.greedy_new)
    stdout = run([tessera, "generate", "--model", d, "--ids", "--max-new-tokens", str(c.greedy_new),
                  "--threads", str(threads)] + [" ".join(map(str, s)) for s in sources])
    # One line per source, in order (an empty line for an empty output).
    got = [[int(t) for t in line.split()] for line in stdout.split("\n")[:len(sources)]]
    greedy_ok = got == want
    ok = err_l <= c.tol and err_a <= c.tol and greedy_ok
    return ok, err_l, err_a, greedy_ok, (got, want)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="rnn_parity_")
    failures = 0
    print(f"{'config':28} {'cell':5} {'E':>3} {'H':>4} {'L':>2} {'A':>3} {'att':9} {'dtype':5} "
          f"{'batch lengths':16} {'max|dlogits|':>12} {'max|dattn|':>11} greedy  result")
    try:
        for c in CONFIGS:
            if args.only and c.name not in args.only:
                continue
            try:
                ok, el, ea, gok, detail = check(c, args.tessera, work, args.threads)
            except Exception as e:  # noqa: BLE001
                print(f"{c.name:28} ERROR {e}")
                failures += 1
                continue
            lens = ",".join(map(str, c.lengths)) + ("" if c.mask else " (pad ids)")
            print(f"{c.name:28} {c.cell:5} {c.E:3} {c.H:4} {c.L:2} {c.A:3} {c.attention:9} {c.dtype:5} "
                  f"{lens:16} {el:12.2e} {ea:11.2e} {'equal' if gok else 'DIFFER'}  "
                  f"{'ok' if ok else 'FAIL'}")
            if not gok:
                print(f"    tessera {detail[0]}\n    torch   {detail[1]}")
            failures += 0 if ok else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{failures} failing configuration(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
