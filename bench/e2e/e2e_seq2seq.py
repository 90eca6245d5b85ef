#!/usr/bin/python3
"""B. "Attention Is All You Need" base transformer with embeddings (6+6 layers, d_model 512,
8 heads, ff 2048, ReLU, post-LN, vocabulary 32,000, sinusoidal positions, random weights), batch 1,
source 32 tokens, greedy decoding of exactly 32 new tokens from bos (no eos stop): tokens/s over
the encoder plus all 32 steps. Tessera: TransformerModel::encode + decode_step (its KV cache);
PyTorch: the same TokenTransformer with a hand-written self-attention KV cache and the
cross-attention keys/values computed once; ONNX Runtime: an exported encoder (source ids -> every
layer's cross keys/values) and decoder-step models taking and returning past keys/values.

    /usr/bin/python3 bench/e2e/e2e_seq2seq.py [--threads 1,2] [--reps 5] [--scratch DIR]
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
    ap.add_argument("--src-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    d = C.workdir(args, "seq2seq")
    model_dir = os.path.join(d, "model")
    onnx = {k: os.path.join(d, f"s2s_{k}.onnx") for k in ("encoder", "decoder_first", "decoder_step")}

    def build():
        import e2e_models as M
        M.make_s2s_dir(model_dir, args.seed)
        M.export_s2s_onnx(model_dir, onnx)

    C.prepared(d, args, build, "the base seq2seq transformer (model dir + 3 ONNX files)")
    import e2e_models as M
    rng = np.random.default_rng(args.seed + 2)
    src = rng.integers(4, M.S2S["src_vocab_size"], size=(1, args.src_len), dtype=np.int64)
    cases = [{"name": f"src {args.src_len}, greedy {args.steps}",
              "inputs": {"src_ids": M.save_raw(src, os.path.join(d, "src_ids.bin"))},
              "steps": args.steps}]
    spec = {"kind": "seq2seq", "model_dir": model_dir, "onnx": onnx, "cases": cases,
            "num_layers": M.S2S["num_decoder_layers"], "bos_id": M.S2S["bos_id"]}
    steps = args.steps
    metrics = [C.Metric("encoder + all steps", "tokens/s", lambda r: steps / r["total_s"], True),
               C.Metric("encoder", "ms", lambda r: r["prefill_s"] * 1e3, False)]
    results = C.run_comparison(
        "seq2seq", "B. \"Attention Is All You Need\" base (6+6 x 512/8 heads/2048, ReLU, "
        "vocab 32000), batch 1, greedy with a KV cache", spec, metrics, args,
        C.tokens_check,
        [f"tokens/s = {steps} / (encoder + {steps} decoder steps incl. the output "
         "projection and argmax of the last position); no eos stop in any engine."])
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
