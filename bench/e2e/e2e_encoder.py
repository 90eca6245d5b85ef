#!/usr/bin/python3
"""A. BERT-base-shaped nn.TransformerEncoder (12 layers, d_model 768, 12 heads, ff 3072, GELU,
post-LN, random weights), fp32, one forward pass of a [B, 128, 768] input at B = 1 and B = 8:
Tessera's `transformer` family (model dir: tools/make_bert_base.py's module, each layer's weights
drawn anew, written by tools/export_torch.py), PyTorch 1.13 (eval +
inference_mode: its fused fast path) and ONNX Runtime (ONNX export of the same module).

    /usr/bin/python3 bench/e2e/e2e_encoder.py [--threads 1,2] [--reps 5] [--scratch DIR]
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import e2e_common as C  # noqa: E402


TITLE = "BERT-base-shaped nn.TransformerEncoder (12 x 768/12 heads/3072, GELU, post-LN), fp32"


def prepare(args, batches) -> dict:
    """Builds (or reuses) the model dir and ONNX file in SCRATCH/encoder and the inputs of
    `batches` x args.seq; returns the workers' spec (also used by busy.py)."""
    d = C.workdir(args, "encoder")
    model_dir, onnx = os.path.join(d, "model"), os.path.join(d, "encoder.onnx")

    def build():
        import e2e_models as M
        M.make_encoder_dir(model_dir, args.seed)
        M.export_encoder_onnx(model_dir, onnx)

    C.prepared(d, args, build, "the BERT-base-shaped encoder (model dir + ONNX)", recipe=3)
    import e2e_models as M
    rng = np.random.default_rng(args.seed + 1)
    cases = []
    for b in batches:
        x = rng.standard_normal((b, args.seq, 768), dtype=np.float32)
        cases.append({"name": f"B={b},S={args.seq}",
                      "inputs": {"src": M.save_raw(x, os.path.join(d, f"src-b{b}.bin"))}})
    return {"kind": "encoder", "model_dir": model_dir, "onnx": {"model": onnx}, "cases": cases}


def main() -> int:
    ap = C.arg_parser(__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    spec = prepare(args, [int(x) for x in args.batches.split(",")])
    metrics = [C.Metric("forward", "ms", lambda r: r["total_s"] * 1e3, False)]
    results = C.run_comparison(
        "encoder", f"A. {TITLE}, one forward pass", spec, metrics, args, C.tensor_check,
        ["PyTorch: nn.TransformerEncoder in eval mode under torch.inference_mode() "
         "(fused_encoder_layer_op in the checks says whether its fast path ran). "
         "ONNX export: the same module on the ordinary path (the fused op has no ONNX "
         "symbolic), opset 14."])
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
