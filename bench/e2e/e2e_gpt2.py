#!/usr/bin/python3
"""C. GPT-2-small-shaped decoder (12 layers, 768, 12 heads, vocab 50257, n_positions 1024, tied
LM head, random weights), batch 1: prefill of a 128-token prompt (ms, ending with the argmax of
the last position's logits) and 128 greedy decode steps after it (tokens/s = 128 / decode time).
PyTorch: a minimal GPT-2 with Hugging Face tensor names (bench/e2e/e2e_models.py) and a KV cache;
ONNX Runtime: the same module exported as a prefill model and a decode-step model with past
keys/values in and out; Tessera: the `gpt2` family (tessera_e2e's causal_lm kind:
models::greedy_fixed_steps, the loop of `tessera bench --generate`).

    /usr/bin/python3 bench/e2e/e2e_gpt2.py [--threads 1,2] [--reps 3] [--scratch DIR]
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import e2e_common as C  # noqa: E402


def main() -> int:
    ap = C.arg_parser(__doc__.split("\n")[0], reps=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    args = ap.parse_args()
    d = C.workdir(args, "gpt2")
    model_dir = os.path.join(d, "model")
    onnx = {k: os.path.join(d, f"gpt2_{k}.onnx") for k in ("prefill", "decode")}

    def build():
        import e2e_models as M
        M.make_gpt2_dir(model_dir, args.seed)
        M.export_gpt2_onnx(model_dir, onnx)

    C.prepared(d, args, build, "the GPT-2-small-shaped model (HF-named model dir + 2 ONNX files)")
    import e2e_models as M
    rng = np.random.default_rng(args.seed + 3)
    prompt = rng.integers(0, M.GPT2_CONFIG["vocab_size"], size=(1, args.prompt), dtype=np.int64)
    cases = [{"name": f"prompt {args.prompt}, decode {args.steps}",
              "inputs": {"input_ids": M.save_raw(prompt, os.path.join(d, "prompt.bin"))},
              "steps": args.steps}]
    spec = {"kind": "causal_lm", "model_dir": model_dir, "onnx": onnx, "cases": cases,
            "num_layers": M.GPT2_CONFIG["n_layer"]}
    steps = args.steps
    metrics = [C.Metric(f"prefill {args.prompt}", "ms", lambda r: r["prefill_s"] * 1e3, False),
               C.Metric(f"decode {steps}", "tokens/s", lambda r: steps / r["decode_s"], True)]
    results = C.run_comparison(
        "gpt2", "C. GPT-2-small-shaped decoder (12 x 768/12 heads, vocab 50257), batch 1, "
        "KV cache", spec, metrics, args, C.tokens_check,
        ["Prefill: one pass over the prompt producing the K/V cache and the last "
         f"position's logits (+ argmax). Decode: {steps} steps feeding one token each, "
         f"context {args.prompt} -> {args.prompt + steps}; tokens/s = {steps} / decode "
         "time (prefill excluded); tokens compared = the prefill's + every step's."])
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
