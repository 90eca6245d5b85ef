#!/usr/bin/python3
"""Greedy decoding of the rnn_attention family: Tessera against PyTorch, side by side.

Two random models (exported with tools/export_torch.py): the demo size (GRU, embed 64, hidden
128, 1 encoder layer, attention 64, vocab 60) and a larger one (GRU, embed 256, hidden 512, 2
encoder layers, attention 256, vocab 8000). Workload: sources of --src tokens (32), exactly --new
(32) greedy decode steps (eos not checked, so every run does the same work), batch 1 and 16, 1
and 2 threads.

  Tessera: `tessera bench --model DIR --batch B --seq S --generate N --threads T --json`
           (median of --reps repetitions after a warm-up; encode + N steps).
  PyTorch: RNNAttention.encode, then N calls of RNNAttention.step with the argmax fed back (the
           natural decoder loop of RNNAttention.greedy, nn.GRU under torch.no_grad()), with
           torch.set_num_threads(T); median of --reps.

Prints the CPU, the machine limits `tessera sysinfo` measured, then one row per (model, batch,
threads): milliseconds per run and Tessera's speed-up. Create /tmp/quiet.lock around it on a
shared machine (see the project's quiet protocol).

    bench/rnn/bench_rnn.py --tessera build/tools/tessera [--reps 20] [--only demo|large]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import torch  # noqa: E402

from export_torch import export_model  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402

MODELS = {
    "demo": dict(cell="gru", embed_dim=64, hidden_size=128, num_encoder_layers=1, attention_dim=64,
                 src_vocab_size=60, tgt_vocab_size=60),
    "large": dict(cell="gru", embed_dim=256, hidden_size=512, num_encoder_layers=2, attention_dim=256,
                  src_vocab_size=8000, tgt_vocab_size=8000),
}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def torch_ms(m: RNNAttention, src: torch.Tensor, steps: int, threads: int, reps: int) -> float:
    torch.set_num_threads(threads)
    pad = torch.zeros_like(src, dtype=torch.bool)

    def once():
        with torch.no_grad():
            memory, keys, state, src_pad, final = m.encode(src, pad)
            y = torch.full((src.shape[0],), m.cfg["bos_id"], dtype=torch.long)
            for _ in range(steps):
                logits, _, state = m.step(y, state, memory, keys, src_pad, final)
                y = logits.argmax(dim=-1)

    once()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def tessera_ms(tessera: str, d: str, batch: int, seq: int, steps: int, threads: int, reps: int):
    out = subprocess.run([tessera, "bench", "--model", d, "--batch", str(batch), "--seq", str(seq),
                          "--generate", str(steps), "--threads", str(threads), "--reps", str(reps),
                          "--json"], capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return j["latency_ms"]["median"], j.get("prefill_ms", 0.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--src", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--only", choices=list(MODELS))
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}")
    si = subprocess.run([args.tessera, "sysinfo"], capture_output=True, text=True).stdout
    print("tessera sysinfo:\n  " + "\n  ".join(si.strip().splitlines()))
    print(f"torch {torch.__version__}; sources {args.src} tokens, {args.new} greedy steps, median of "
          f"{args.reps}")
    print(f"{'model':6} {'batch':>5} {'thr':>3} {'tessera ms':>11} {'(encode)':>9} {'torch ms':>9} "
          f"{'speed-up':>8}")
    work = tempfile.mkdtemp(prefix="bench_rnn_")
    for name, cfg in MODELS.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(0)
        m = RNNAttention(attention="additive", max_length=max(64, args.new), **cfg).eval()
        d = os.path.join(work, name)
        export_model(m, d)
        for batch in (1, 16):
            g = torch.Generator().manual_seed(1)
            src = torch.randint(4, cfg["src_vocab_size"], (batch, args.src), generator=g)
            for threads in (1, 2):
                t_ms, enc_ms = tessera_ms(args.tessera, d, batch, args.src, args.new, threads, args.reps)
                p_ms = torch_ms(m, src, args.new, threads, args.reps)
                print(f"{name:6} {batch:5} {threads:3} {t_ms:11.3f} {enc_ms:9.3f} {p_ms:9.3f} "
                      f"{p_ms / t_ms:7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
