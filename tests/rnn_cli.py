#!/usr/bin/python3
"""The rnn_attention family through the CLI with text (CTest `rnn_cli`).

A small random RNNAttention (tools/rnn_attention.py: GRU, 2 encoder layers, additive attention)
with the char tokenizer of models/demo-dates (vocabularies sized to it), exported with
tools/export_torch.py. The generator's biases of the special tokens are pushed down so greedy
decoding runs to --max-new-tokens and yields text. Checks:

1. `tessera generate` (prompts as text on stdin, text out) == RNNAttention.greedy on the same
   tokenization, decoded as the char tokenizer does (special tokens skipped);
2. `tessera attention TEXT --out F.png` writes a PNG (signature, IHDR width and height > 0);
3. `tessera profile --generate` prints the family's operator rows (gather, linear, rnn_cell,
   additive_attention) and its nodes (encoder recurrences, attention, decoder cell, generator).

    rnn_cli.py --tessera build/tools/tessera [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import torch  # noqa: E402

from export_torch import export_model  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402

TOKENIZER = os.path.join(_ROOT, "models", "demo-dates", "tokenizer.json")
PROMPTS = ["1 May 2020", "July 4, 1976", "a"]
MAX_NEW = 10


class CharTok:
    """The char tokenizer as engine/text/tokenizer.cpp reads it."""

    def __init__(self, path: str):
        with open(path) as f:
            j = json.load(f)
        self.tokens = j["tokens"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.unk = j.get("unk_id", -1)
        self.special = {i for i, t in enumerate(self.tokens) if len(t) > 2 and t[0] == "<" and t[-1] == ">"}
        if self.unk >= 0:
            self.special.add(self.unk)

    def encode(self, text: str, eos: int) -> list:
        """A source as tessera generate encodes text (and CharTokenizer.encode): eos last."""
        return [self.ids.get(ch, self.unk) for ch in text] + [eos]

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] for i in ids if i not in self.special)


def make_model(d: str, tok: CharTok, seed: int = 7) -> RNNAttention:
    """A random model with vocabularies of the tokenizer's size, written to directory d."""
    torch.manual_seed(seed)
    v = len(tok.tokens)
    m = RNNAttention(cell="gru", embed_dim=16, hidden_size=24, num_encoder_layers=2, attention_dim=12,
                     src_vocab_size=v, tgt_vocab_size=v, max_length=16).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.5, 0.5)
        for i in sorted(tok.special | {m.cfg["eos_id"], m.cfg["bos_id"], m.cfg["pad_id"]}):
            m.generator.bias[i] = -20.0  # never chosen: greedy runs to the limit, all text
    export_model(m, d)
    shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.json"))
    return m


def png_size(path: str):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="rnn_cli_")
    os.makedirs(work, exist_ok=True)
    d = os.path.join(work, "model")
    tok = CharTok(TOKENIZER)
    m = make_model(d, tok)
    failures = []

    def run(cmd, stdin=None):
        out = subprocess.run([args.tessera, *cmd], input=stdin, capture_output=True, text=True)
        if out.returncode != 0:
            failures.append(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    # 1. generate, text in and out.
    want = [tok.decode(ids) for ids in m.greedy([tok.encode(p, m.cfg["eos_id"]) for p in PROMPTS], max_new_tokens=MAX_NEW)]
    got = run(["generate", "--model", d, "--max-new-tokens", str(MAX_NEW), "--threads", "2"],
              "\n".join(PROMPTS) + "\n").splitlines()
    print(f"generate: {len(PROMPTS)} prompts; want {want}; got {got}")
    if got != want:
        failures.append(f"generate: got {got}, want {want}")
    if any(len(w) == 0 for w in want):
        failures.append("generate: an empty reference output (the test model should run to the limit)")

    # 2. attention PNG.
    png = os.path.join(work, "alignment.png")
    run(["attention", "--model", d, PROMPTS[1], "--out", png, "--max-new-tokens", str(MAX_NEW)])
    size = png_size(png) if os.path.exists(png) else None
    print(f"attention: {png} {size}")
    if size is None or size[0] <= 0 or size[1] <= 0:
        failures.append(f"attention: {png} is not a PNG with positive dimensions ({size})")

    # 3. profile rows (names only: the machine's limits, measured by profile, play no part).
    prof = run(["profile", "--model", d, "--batch", "2", "--seq", "6", "--generate", "4", "--threads", "1",
                "--reps", "2"])
    rows = {line.split()[0] for line in prof.splitlines() if line.strip()}
    expected = ["gather", "linear", "rnn_cell", "additive_attention", "src_embed", "tgt_embed",
                "encoder.l0.recurrence", "encoder.l1.recurrence", "encoder.l0.input_proj",
                "encoder.l1_reverse.input_proj", "attention", "attention.U", "attention.W", "bridge",
                "decoder.input_proj", "decoder.cell", "generator"]
    missing = [r for r in expected if r not in rows]
    print(f"profile: {len(expected) - len(missing)}/{len(expected)} expected rows")
    if missing:
        failures.append(f"profile: rows missing: {missing}\n{prof}")

    for f in failures:
        print("FAIL " + f)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
