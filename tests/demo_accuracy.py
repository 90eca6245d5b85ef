#!/usr/bin/python3
"""The demo model's greedy accuracy in Tessera must equal PyTorch's.

Takes the 1,000 held-out dates of tools/dates.py (``heldout_dates(1000)``), decodes them
greedily

* in PyTorch: a TokenTransformer built from the model directory's config.json with the weights
  read from its model.safetensors (tools/safetensors_io), the tokenizer from tokenizer.json;
* with ``tessera generate --model DIR --threads 2``, run once with all inputs on stdin, one per
  line (one batch);

and prints both exact-match accuracies and the number of inputs on which the two disagree.
Also checks that ``tessera generate --model DIR "the 26th of November 2026"`` prints exactly
``2026-11-26``. Exit code 1 unless both accuracies are >= 99% and equal and the example is right.

    demo_accuracy.py --tessera build/tools/tessera [--model models/demo-dates]
    demo_accuracy.py --dry-run      # the PyTorch half only
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import torch  # noqa: E402

import dates  # noqa: E402
from tessera_torch import CharTokenizer, load_token_model  # noqa: E402

EXAMPLE = ("the 26th of November 2026", "2026-11-26")
MIN_ACCURACY = 0.99


def tessera_generate(args, texts=None, stdin_lines=None):
    cmd = [args.tessera, "generate", "--model", args.model, "--threads", str(args.threads)]
    if texts:
        cmd += list(texts)
    stdin = None if stdin_lines is None else "".join(line + "\n" for line in stdin_lines)
    p = subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True, text=True,
                       encoding="utf-8", timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:5])} ...` exited {p.returncode}: {p.stderr.strip()[:300]}")
    out = p.stdout
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Greedy accuracy of the demo model: tessera generate vs PyTorch.")
    ap.add_argument("--tessera", help="path to the tessera binary (required unless --dry-run)")
    ap.add_argument("--model", default=os.path.join(_ROOT, "models", "demo-dates"), help="the demo model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="number of held-out dates (default 1000)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for the tessera run (default 600)")
    ap.add_argument("--dry-run", action="store_true", help="PyTorch half only (no tessera)")
    args = ap.parse_args(argv)
    if not args.dry_run:
        if not args.tessera:
            ap.error("--tessera is required (or use --dry-run)")
        if not (os.path.isfile(args.tessera) and os.access(args.tessera, os.X_OK)):
            print(f"demo_accuracy.py: {args.tessera} is not an executable file", file=sys.stderr)
            return 1
    torch.set_num_threads(args.threads)

    pairs = dates.heldout_dates(args.n)
    texts = [t for t, _ in pairs]
    gold = [iso for _, iso in pairs]
    tok = CharTokenizer.load(os.path.join(args.model, "tokenizer.json"))
    model = load_token_model(args.model)

    t0 = time.time()
    torch_out = [tok.decode(ids) for ids in model.greedy([tok.encode(t) for t in texts], max_new_tokens=64)]
    torch_acc = sum(p == g for p, g in zip(torch_out, gold)) / len(gold)
    print(f"PyTorch: {torch_acc * 100:.2f}% exact match on {len(gold)} held-out dates ({time.time() - t0:.1f}s)")
    torch_example = tok.decode(model.greedy([tok.encode(EXAMPLE[0])])[0])
    print(f"PyTorch: {EXAMPLE[0]!r} -> {torch_example!r}")
    failures = []
    if torch_acc < MIN_ACCURACY:
        failures.append(f"PyTorch accuracy {torch_acc * 100:.2f}% < {MIN_ACCURACY * 100:.0f}%")
    if args.dry_run:
        for t, p, g in [(t, p, g) for t, p, g in zip(texts, torch_out, gold) if p != g][:10]:
            print(f"  wrong: {t!r} -> {p!r} (want {g})")
        print("dry run: tessera not run" + ("" if not failures else "; " + "; ".join(failures)))
        return 1 if failures else 0

    t0 = time.time()
    try:
        tess_out, _ = tessera_generate(args, stdin_lines=texts)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}")
        return 1
    tess_s = time.time() - t0
    if len(tess_out) != len(texts):
        print(f"FAIL: tessera printed {len(tess_out)} lines for {len(texts)} inputs")
        return 1
    tess_acc = sum(p == g for p, g in zip(tess_out, gold)) / len(gold)
    disagree = [(t, a, b, g) for t, a, b, g in zip(texts, torch_out, tess_out, gold) if a != b]
    print(f"tessera: {tess_acc * 100:.2f}% exact match ({tess_s:.1f}s for one batch of {len(texts)})")
    print(f"rows where tessera and PyTorch disagree: {len(disagree)}")
    for t, a, b, g in disagree[:10]:
        print(f"  {t!r}: PyTorch {a!r}, tessera {b!r} (gold {g})")
    if tess_acc < MIN_ACCURACY:
        failures.append(f"tessera accuracy {tess_acc * 100:.2f}% < {MIN_ACCURACY * 100:.0f}%")
    if tess_acc != torch_acc:
        failures.append("the accuracies differ")

    try:
        lines, raw = tessera_generate(args, texts=[EXAMPLE[0]])
        ok = raw.rstrip("\n") == EXAMPLE[1] and lines == [EXAMPLE[1]]
        print(f"tessera generate {EXAMPLE[0]!r} printed {raw!r}: {'OK' if ok else 'WRONG'}")
        if not ok:
            failures.append(f"example printed {raw!r}, expected {EXAMPLE[1]!r}")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        failures.append(f"example run failed: {e}")

    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
