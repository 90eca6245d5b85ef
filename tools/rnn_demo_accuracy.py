#!/usr/bin/python3
"""Attention for RNNs, measured: greedy exact match on the 1,000 held-out dates of tools/dates.py
(``heldout_dates(1000)``) for the RNN demo without attention (models/demo-dates-rnn-noattn), the
RNN demo with additive attention (models/demo-dates-rnn) and the transformer demo
(models/demo-dates): overall and by input length.

Input-length buckets are the tertiles of the sources' character lengths over the held-out inputs:
short = length <= the 1/3 quantile, medium = up to the 2/3 quantile, long = longer (ties keep
equal lengths in one bucket; the header states the bounds and the bucket sizes).

Engines:

* ``--engine tessera`` (default): one ``tessera generate --model DIR --threads N
  --max-new-tokens 16`` per model with every input on stdin, one per line (one batch); one
  output line per input (as tests/demo_accuracy.py drives the transformer demo).
* ``--engine torch``: the reference modules loaded from the same model directories:
  tools/rnn_attention.py's RNNAttention (``model_type: rnn_attention``) and tools/tessera_torch's
  TokenTransformer (``model_type: transformer``), greedy decoding.
* ``--engine both``: the table from tessera, and every output of the two RNN models must equal
  the reference module's on the same weights (what the test ``rnn_demo_accuracy`` runs; the
  transformer demo's agreement with PyTorch is the test ``demo_accuracy``'s).

Exit code 1 if a model could not be run, if the engines disagree (``both``), or the attention RNN's (or the transformer's) overall
accuracy is below ``--min-accuracy`` (default 0.99).

    /usr/bin/python3 tools/rnn_demo_accuracy.py [--engine tessera|torch|both] [--tessera build/tools/tessera]
        [--markdown] [--min-accuracy 0.99]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import dates  # noqa: E402

MAX_NEW_TOKENS = 16  # an ISO date is 10 characters; anything longer is wrong either way


def tertile_bounds(lengths):
    """(a, b): short = len <= a, medium = a < len <= b, long = len > b."""
    s = sorted(lengths)
    n = len(s)
    return s[(n - 1) // 3], s[(2 * n - 1) // 3]


def bucket(length, bounds):
    a, b = bounds
    return "short" if length <= a else ("medium" if length <= b else "long")


def run_torch(model_dir, texts, threads):
    import torch

    from tessera_torch import CharTokenizer, load_state_dict_from_dir, load_token_model

    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    tok = CharTokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    if cfg.get("model_type") == "rnn_attention":
        from rnn_attention import from_config

        model = from_config(cfg)
        model.load_state_dict(load_state_dict_from_dir(model_dir), strict=True)
        model.eval()
    else:
        model = load_token_model(model_dir)
    outs = model.greedy([tok.encode(t) for t in texts], max_new_tokens=MAX_NEW_TOKENS)
    return [tok.decode(o) for o in outs]


def run_tessera(model_dir, texts, args):
    cmd = [args.tessera, "generate", "--model", model_dir, "--threads", str(args.threads),
           "--max-new-tokens", str(MAX_NEW_TOKENS)]
    p = subprocess.run(cmd, input="".join(t + "\n" for t in texts), capture_output=True, text=True,
                       encoding="utf-8", timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[:300]}")
    lines = p.stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(texts):
        raise RuntimeError(f"tessera printed {len(lines)} lines for {len(texts)} inputs")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Exact match on the held-out dates: RNN without and with "
                                             "attention, and the transformer demo, by input length.")
    ap.add_argument("--engine", choices=("tessera", "torch", "both"), default="tessera",
                    help="both: the table from tessera, and every RNN output must equal the "
                         "reference module's on the same weights")
    ap.add_argument("--tessera", default=os.path.join(_ROOT, "build", "tools", "tessera"),
                    help="the tessera binary (--engine tessera)")
    ap.add_argument("--rnn-noattn", default=os.path.join(_ROOT, "models", "demo-dates-rnn-noattn"))
    ap.add_argument("--rnn", default=os.path.join(_ROOT, "models", "demo-dates-rnn"))
    ap.add_argument("--transformer", default=os.path.join(_ROOT, "models", "demo-dates"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="number of held-out dates (default 1000)")
    ap.add_argument("--min-accuracy", type=float, default=0.99,
                    help="the attention RNN and the transformer must reach this overall (default 0.99)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per tessera run")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--show-wrong", type=int, default=0, help="print up to N wrong outputs per model")
    args = ap.parse_args(argv)
    if args.engine != "torch" and not (os.path.isfile(args.tessera) and os.access(args.tessera, os.X_OK)):
        print(f"rnn_demo_accuracy.py: {args.tessera} is not an executable file", file=sys.stderr)
        return 1

    pairs = dates.heldout_dates(args.n)
    texts = [t for t, _ in pairs]
    gold = [iso for _, iso in pairs]
    bounds = tertile_bounds([len(t) for t in texts])
    buckets = [bucket(len(t), bounds) for t in texts]
    names = ("short", "medium", "long")
    sizes = {b: buckets.count(b) for b in names}
    lo, hi = min(len(t) for t in texts), max(len(t) for t in texts)

    rows = [("RNN, no attention", args.rnn_noattn, None),
            ("RNN, additive attention", args.rnn, args.min_accuracy),
            ("Transformer (demo-dates)", args.transformer, args.min_accuracy)]
    results, failures = [], []
    for label, model_dir, minimum in rows:
        t0 = time.time()
        try:
            preds = run_torch(model_dir, texts, args.threads) if args.engine == "torch" \
                else run_tessera(model_dir, texts, args)
            if args.engine == "both" and model_dir != args.transformer:  # (demo_accuracy's job)
                ref = run_torch(model_dir, texts, args.threads)
                differ = [(t, p, r) for t, p, r in zip(texts, preds, ref) if p != r]
                print(f"  {label}: tessera and the reference module differ on {len(differ)} of "
                      f"{len(texts)} outputs" + (f", first {differ[0]!r}" if differ else ""))
                if differ:
                    failures.append(f"{label}: {len(differ)} outputs differ from the reference module")
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            failures.append(f"{label}: {e}")
            results.append((label, model_dir, None, time.time() - t0))
            continue
        ok = [p == g for p, g in zip(preds, gold)]
        acc = {"all": sum(ok) / len(ok)}
        for b in names:
            sel = [o for o, bb in zip(ok, buckets) if bb == b]
            acc[b] = sum(sel) / len(sel) if sel else float("nan")
        results.append((label, model_dir, acc, time.time() - t0))
        if minimum is not None and acc["all"] < minimum:
            failures.append(f"{label}: {acc['all'] * 100:.1f}% < {minimum * 100:.1f}%")
        if args.show_wrong:
            for t, p, g in [(t, p, g) for t, p, g, o in zip(texts, preds, gold, ok) if not o][:args.show_wrong]:
                print(f"  {label}: {t!r} -> {p!r} (want {g})")

    a, b = bounds
    print(f"Greedy exact match on {len(texts)} held-out dates, engine {args.engine}; input length in "
          f"characters ({lo}-{hi}): short <= {a} ({sizes['short']}), medium {a + 1}-{b} "
          f"({sizes['medium']}), long >= {b + 1} ({sizes['long']})")
    heads = ["model", "overall", f"short (<= {a})", f"medium ({a + 1}-{b})", f"long (>= {b + 1})"]

    def cells(acc):
        return ["n/a"] * 4 if acc is None else [f"{acc[k] * 100:.1f}%" for k in ("all",) + names]

    table = [[label] + cells(acc) for label, _, acc, _ in results]
    if args.markdown:
        print("| " + " | ".join(heads) + " |")
        print("| --- |" + " ---: |" * (len(heads) - 1))
        for r in table:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(r[i]) for r in table + [heads]) for i in range(len(heads))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
        print(fmt(heads))
        for r in table:
            print(fmt(r))
    for label, model_dir, _, secs in results:
        print(f"  {label}: {os.path.relpath(model_dir, _ROOT)} ({secs:.1f}s)")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
