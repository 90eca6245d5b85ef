#!/usr/bin/python3
"""D. BERT-base-shaped BertModel (Hugging Face tensor names: embeddings.*, encoder.layer.N.*,
pooler.*; 12 layers, 768, 12 heads, 3072, GELU, vocab 30522, random weights), fp32, one forward
pass of input_ids [B, 128] (attention_mask all ones, token_type_ids 0) at B = 1 and 8, output
last_hidden_state. PyTorch: a minimal BertModel with Hugging Face's eager maths
(bench/e2e/e2e_models.py); ONNX Runtime: its ONNX export; Tessera: the `bert` family
(tessera_e2e's bert kind: Model::run, what `tessera bench` runs on random inputs of this shape).

    /usr/bin/python3 bench/e2e/e2e_bert.py [--threads 1,2] [--reps 5] [--scratch DIR]
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import e2e_common as C  # noqa: E402


def main() -> int:
    ap = C.arg_parser(__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    d = C.workdir(args, "bert")
    model_dir, onnx = os.path.join(d, "model"), os.path.join(d, "bert.onnx")

    def build():
        import e2e_models as M
        M.make_bert_dir(model_dir, args.seed)
        M.export_bert_onnx(model_dir, onnx)

    C.prepared(d, args, build, "the BERT-base-shaped BertModel (HF-named model dir + ONNX)")
    import e2e_models as M
    rng = np.random.default_rng(args.seed + 4)
    cases = []
    for b in [int(x) for x in args.batches.split(",")]:
        ids = rng.integers(1000, M.BERT_CONFIG["vocab_size"], size=(b, args.seq), dtype=np.int64)
        inputs = {"input_ids": M.save_raw(ids, os.path.join(d, f"input_ids-b{b}.bin")),
                  "attention_mask": M.save_raw(np.ones_like(ids), os.path.join(d, f"mask-b{b}.bin")),
                  "token_type_ids": M.save_raw(np.zeros_like(ids), os.path.join(d, f"types-b{b}.bin"))}
        cases.append({"name": f"B={b},S={args.seq}", "inputs": inputs})
    spec = {"kind": "bert", "model_dir": model_dir, "onnx": {"model": onnx}, "cases": cases}
    metrics = [C.Metric("forward", "ms", lambda r: r["total_s"] * 1e3, False)]
    results = C.run_comparison(
        "bert", "D. BERT-base-shaped BertModel (HF names; 12 x 768/12 heads/3072, GELU), "
        "fp32, one forward pass", spec, metrics, args, C.tensor_check,
        ["Output compared: last_hidden_state."])
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
