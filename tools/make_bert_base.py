#!/usr/bin/python3
"""Write a BERT-base-shaped `transformer` model directory with random weights.

An nn.TransformerEncoder of 12 post-LN layers (d_model 768, 12 heads, feed-forward 3072, GELU,
batch_first), exported with tools/export_torch.py's export_model: config.json and
model.safetensors (f32, about 340 MB). For profiling and benchmarking only: the weights are
random (seeded), so outputs mean nothing. Never commit the result.

    /usr/bin/python3 tools/make_bert_base.py /tmp/bert-base-shaped [--seed 0] [--dtype f32]
    build/tools/tessera profile --model /tmp/bert-base-shaped --batch 1 --seq 128 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from export_torch import export_model  # noqa: E402

D_MODEL, HEADS, FF, LAYERS = 768, 12, 3072, 12


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="model directory to write (e.g. /tmp/bert-base-shaped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="f32", choices=("f32", "f16", "bf16"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=FF, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=False)
    model = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
    # nn.TransformerEncoder deep-copies `layer`: every layer would start with the same weights
    # (and caches or exporters could fold them into one). Draw each layer's weights anew.
    with torch.no_grad():
        for lay in model.layers:
            for name, p in lay.named_parameters():
                if name.endswith("bias"):
                    nn.init.uniform_(p, -0.02, 0.02)
                elif p.dim() == 1:  # LayerNorm weight
                    nn.init.uniform_(p, 0.9, 1.1)
                else:
                    nn.init.xavier_uniform_(p)
    model.eval()
    cfg = export_model(model, args.out, dtype=args.dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, ff {FF}, gelu, "
          f"post-LN; {params} parameters ({params * 4 / 1e6:.0f} MB f32); config {cfg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
