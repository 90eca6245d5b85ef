#!/usr/bin/python3
"""Accuracy of Tessera's reduced-precision weights (--dtype bf16 / int8) against fp32: one table.

For each dtype (f32, bf16, int8; activations stay fp32, only GEMM weights change type):

* the trained prose GPT (models/prose-gpt, tools/train_prose_gpt.py): held-out perplexity over
  its heldout.txt (GPT-2 BPE tokens in windows of --window tokens, each token predicted from
  the ones before it in its window), its change against fp32, next-token top-1 agreement with
  fp32 over the same positions, max and mean |logit - fp32 logit|;
* the demo (models/demo-dates): exact match on the 1,000 held-out dates of tools/dates.py
  (greedy, `tessera generate --dtype D`, one batch on stdin);
* random BERT-base-shaped and GPT-2-small-shaped checkpoints (tools/make_hf_checkpoint.py: 12
  layers, 768, 12 heads; BERT vocab 30522, GPT-2 50257): one batch of 128 random ids, max
  |output - fp32 output| (BERT last_hidden_state, GPT-2 logits) and the outputs' max |fp32|.

Models run in this process through the Python module (`tessera.Model(path, dtype=D)`, built into
BUILD/python). Targets (issue 14) are checked and printed under the table; the exit code is 1
when one is missed (perplexity +0.5 % bf16 / +2 % int8; top-1 >= 99 % / 97 %; dates >= 99.9 %).

    precision_accuracy.py [--build build] [--prose models/prose-gpt] [--demo models/demo-dates]
        [--random-dir DIR | --bert DIR --gpt2 DIR] [--no-random] [--no-dates] [--threads 2]
        [--window 128] [--max-windows N] [--dates 1000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import dates  # noqa: E402

DTYPES = ("f32", "bf16", "int8")
TARGETS = {  # dtype: (max perplexity increase, min top-1 agreement, min dates exact)
    "bf16": (0.005, 0.99, 0.999),
    "int8": (0.02, 0.97, 0.999),
}


def log(msg):
    print(f"precision_accuracy: {msg}", file=sys.stderr, flush=True)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def prose_windows(tessera, path, window, max_windows):
    model = tessera.Model(path, threads=1)
    with open(os.path.join(path, "heldout.txt"), encoding="utf-8") as f:
        ids = model.tokenize(f.read())
    n = len(ids) // window
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        raise SystemExit(f"{path}/heldout.txt has fewer than {window} tokens")
    return np.array(ids[: n * window], np.int64).reshape(n, window)


def prose_metrics(tessera, path, windows, threads, batch=4):
    """Per dtype: perplexity, top-1 agreement with f32, max and mean |logit - f32 logit|, summed
    batch by batch (the logits of the whole text would not fit in memory)."""
    models = {d: tessera.Model(path, threads=threads, dtype=d) for d in DTYPES}
    acc = {d: {"nll": 0.0, "n": 0, "top1": 0, "max": 0.0, "sum": 0.0, "count": 0} for d in DTYPES}
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch]
        target = ids[:, 1:]
        ref = None
        for d in DTYPES:
            logits = np.array(models[d].run({"input_ids": ids})["logits"], np.float64)
            if ref is None:
                ref = logits
            a = acc[d]
            lp = log_softmax(logits[:, :-1])
            a["nll"] -= float(np.take_along_axis(lp, target[..., None], axis=-1).sum())
            a["n"] += target.size
            a["top1"] += int((logits[:, :-1].argmax(-1) == ref[:, :-1].argmax(-1)).sum())
            diff = np.abs(logits - ref)
            a["max"] = max(a["max"], float(diff.max()))
            a["sum"] += float(diff.sum())
            a["count"] += diff.size
    return {d: (float(np.exp(a["nll"] / a["n"])), a["top1"] / a["n"], a["max"], a["sum"] / a["count"])
            for d, a in acc.items()}


def dates_accuracy(cli, demo, dtype, threads, n=1000):
    pairs = dates.heldout_dates(n)
    cmd = [cli, "generate", "--model", demo, "--threads", str(threads), "--dtype", dtype]
    p = subprocess.run(cmd, input="".join(t + "\n" for t, _ in pairs), capture_output=True,
                       text=True, encoding="utf-8", timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[:300]}")
    lines = p.stdout.split("\n")[: len(pairs)]
    return sum(a.strip() == iso for a, (_, iso) in zip(lines, pairs)) / len(pairs)


def random_models(directory):
    made = {}
    for family, extra in (("bert", ["--vocab", "30522", "--positions", "512"]),
                          ("gpt2", ["--vocab", "50257", "--positions", "1024"])):
        path = os.path.join(directory, f"{family}-base-shaped")
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            log(f"writing a random {family} checkpoint (12 x 768) to {path}")
            subprocess.run([sys.executable, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"),
                            family, path, "--layers", "12", "--hidden", "768", "--heads", "12",
                            *extra], check=True)
        made[family] = path
    return made


def random_outputs(tessera, path, family, dtype, threads):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 30522 if family == "bert" else 50257, size=(1, 128), dtype=np.int64)
    model = tessera.Model(path, threads=threads, dtype=dtype)
    out = model.run({"input_ids": ids})
    return np.array(out["last_hidden_state" if family == "bert" else "logits"], np.float64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(_ROOT, "build"))
    ap.add_argument("--prose", default=os.path.join(_ROOT, "models", "prose-gpt"))
    ap.add_argument("--demo", default=os.path.join(_ROOT, "models", "demo-dates"))
    ap.add_argument("--random-dir", default="", help="where the random checkpoints are kept "
                    "(default: a temporary folder)")
    ap.add_argument("--bert", default="", help="a BERT-base-shaped checkpoint to use (default: "
                    "written by make_hf_checkpoint.py into --random-dir)")
    ap.add_argument("--gpt2", default="", help="a GPT-2-small-shaped checkpoint to use (idem)")
    ap.add_argument("--no-random", action="store_true", help="skip the random BERT/GPT-2 rows")
    ap.add_argument("--no-dates", action="store_true", help="skip the demo dates")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--max-windows", type=int, default=0, help="0: the whole held-out text")
    ap.add_argument("--dates", type=int, default=1000)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(args.build, "python"))
    import tessera  # noqa: E402  (BUILD/python)
    cli = os.path.join(args.build, "tools", "tessera")

    rows = {d: {} for d in DTYPES}
    t0 = time.time()
    windows = prose_windows(tessera, args.prose, args.window, args.max_windows)
    log(f"prose: {windows.shape[0]} windows x {windows.shape[1]} tokens")
    metrics = prose_metrics(tessera, args.prose, windows, args.threads)
    for d in DTYPES:
        rows[d]["ppl"], rows[d]["top1"], rows[d]["max"], rows[d]["mean"] = metrics[d]
        log(f"prose {d}: perplexity {rows[d]['ppl']:.4f} ({time.time() - t0:.0f} s)")
    if not args.no_dates:
        for d in DTYPES:
            rows[d]["dates"] = dates_accuracy(cli, args.demo, d, args.threads, args.dates)
            log(f"dates {d}: {100 * rows[d]['dates']:.1f} % ({time.time() - t0:.0f} s)")
    if not args.no_random:
        with tempfile.TemporaryDirectory() as tmp:
            paths = ({"bert": args.bert, "gpt2": args.gpt2} if args.bert and args.gpt2
                     else random_models(args.random_dir or tmp))
            for family, path in paths.items():
                base = None
                for d in DTYPES:
                    out = random_outputs(tessera, path, family, d, args.threads)
                    if base is None:
                        base = out
                        for r in rows.values():
                            r[family + "_scale"] = float(np.abs(base).max())
                    rows[d][family] = float(np.abs(out - base).max())
                log(f"random {family}: done ({time.time() - t0:.0f} s)")

    f32 = rows["f32"]
    print(f"Held-out text: {windows.shape[0]} windows x {windows.shape[1]} tokens of "
          f"{os.path.relpath(args.prose, _ROOT)}/heldout.txt; threads {args.threads}.\n")
    head = ["dtype", "prose GPT perplexity", "vs f32", "top-1 = f32", "max abs Δlogit",
            "mean abs Δlogit"]
    if not args.no_dates:
        head.append(f"dates exact ({args.dates})")
    if not args.no_random:
        head += [f"BERT-base-shaped max abs err (max abs out {f32['bert_scale']:.2f})",
                 f"GPT-2-small-shaped max abs err (max abs logit {f32['gpt2_scale']:.2f})"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for d in DTYPES:
        r = rows[d]
        cells = [d, f"{r['ppl']:.4f}", f"{100 * (r['ppl'] / f32['ppl'] - 1):+.3f} %",
                 f"{100 * r['top1']:.2f} %", f"{r['max']:.4f}", f"{r['mean']:.5f}"]
        if not args.no_dates:
            cells.append(f"{100 * r['dates']:.1f} %")
        if not args.no_random:
            cells += [f"{r['bert']:.4f}", f"{r['gpt2']:.4f}"]
        print("| " + " | ".join(cells) + " |")
    missed = []
    for d, (ppl, top1, exact) in TARGETS.items():
        r = rows[d]
        if r["ppl"] / f32["ppl"] - 1 > ppl:
            missed.append(f"{d} perplexity +{100 * (r['ppl'] / f32['ppl'] - 1):.3f} % > {100 * ppl} %")
        if r["top1"] < top1:
            missed.append(f"{d} top-1 {100 * r['top1']:.2f} % < {100 * top1} %")
        if "dates" in r and r["dates"] < exact:
            missed.append(f"{d} dates {100 * r['dates']:.1f} % < {100 * exact} %")
    print()
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
