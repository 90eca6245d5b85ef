#!/usr/bin/python3
"""The alignment picture of an rnn_attention model, from the PyTorch reference module: the
additive attention weights alpha_ij (one row per generated character, one column per source
character and the source's eos) of the greedy output for one text, as a heatmap.

    /usr/bin/python3 tools/rnn_attention_plot.py [--model models/demo-dates-rnn]
        [--out docs/attention-demo-rnn-torch.png] ["Thursday, November 20, 2042"]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import torch  # noqa: E402

from rnn_attention import from_config  # noqa: E402
from tessera_torch import CharTokenizer, load_state_dict_from_dir  # noqa: E402


def alignment(model_dir, text):
    """(source tokens, output tokens, weights [T, S]) of the greedy output for text."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        model = from_config(json.load(f))
    model.load_state_dict(load_state_dict_from_dir(model_dir), strict=True)
    model.eval()
    tok = CharTokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    src = tok.encode(text)
    out = model.greedy([src], max_new_tokens=16)[0]
    tgt = [tok.bos_id] + out + [tok.eos_id]
    with torch.no_grad():
        _, alpha = model(torch.tensor([src]), torch.tensor([tgt[:-1]]))
    src_labels = [tok.tokens[i] if i != tok.eos_id else "<eos>" for i in src]
    out_labels = [tok.tokens[i] if i != tok.eos_id else "<eos>" for i in tgt[1:]]
    return src_labels, out_labels, alpha[0].numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text", nargs="?", default="Thursday, November 20, 2042")
    ap.add_argument("--model", default=os.path.join(_ROOT, "models", "demo-dates-rnn"))
    ap.add_argument("--out", default=os.path.join(_ROOT, "docs", "attention-demo-rnn-torch.png"))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src, out, w = alignment(args.model, args.text)
    fig, ax = plt.subplots(figsize=(0.28 * len(src) + 1.6, 0.28 * len(out) + 1.4), dpi=110)
    ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="equal")
    ax.set_xticks(range(len(src)))
    ax.set_xticklabels([s if s != " " else "\u2423" for s in src], fontsize=8, rotation=90)
    ax.set_yticks(range(len(out)))
    ax.set_yticklabels(out, fontsize=8)
    ax.set_xlabel("source characters")
    ax.set_ylabel("generated characters")
    ax.set_title(f"{os.path.basename(os.path.normpath(args.model))}: {args.text!r} -> {''.join(out[:-1])!r}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}: {args.text!r} -> {''.join(out[:-1])!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
