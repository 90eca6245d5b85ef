#!/usr/bin/python3
"""PyTorch worker of bench/e2e: loads one comparison's model from its Tessera model directory and
answers the coordinator's line protocol (see tessera_e2e.cpp for the protocol and spec format).

    torch_worker.py --spec SPEC.json --threads N [--t2 omp|blas] [--int8 onednn|qnnpack]

Threads (Debian's torch 1.13 runs every GEMM in OpenBLAS, whose threads are not torch's): the
coordinator sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS (and OMP_WAIT_POLICY=PASSIVE for the
"omp" two-thread mode) in the environment; here torch.set_num_threads sets the intra-op count:
N for "omp", 1 for "blas" (OpenBLAS alone uses the second core). Everything runs under
torch.inference_mode() in eval mode (nn.TransformerEncoder's fast path).

--int8 ENGINE: the model after torch.ao.quantization.quantize_dynamic(model, {nn.Linear},
dtype=torch.qint8) on that quantized engine (e2e_models.quantize_int8: GPT-2's Conv1D layers and
LM head become nn.Linear first; nn.TransformerEncoderLayer leaves its fused fast path).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import e2e_models as M  # noqa: E402


def loaded_blas() -> str:
    """Which BLAS library this process runs its GEMMs on (from /proc/self/maps)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in os.path.basename(p):
                libs.add(os.path.realpath(p))
    if any("openblas" in p for p in libs):
        return "OpenBLAS " + next((os.path.basename(p)[len("libopenblasp-r"):-3] for p in libs
                                   if "libopenblasp-r" in p), "")
    return "reference BLAS: slow, install libopenblas0-pthread" if libs else "no BLAS"


def used_fused_encoder(fn) -> bool:
    """Whether `fn` ran PyTorch's fused encoder-layer op (the fast path)."""
    with torch.autograd.profiler.profile() as prof:
        fn()
    return any(e.name == "aten::_transformer_encoder_layer_fwd" for e in prof.function_events)


class Runner:
    def __init__(self, spec: dict, int8: str = ""):
        self.kind = spec["kind"]
        d = spec["model_dir"]
        loader = {"encoder": M.load_encoder, "seq2seq": M.load_s2s, "causal_lm": M.load_gpt2,
                  "bert": M.load_bert}[self.kind]
        self.model = loader(d)
        self.quantized_linears = 0
        if int8:
            self.model = M.quantize_int8(self.kind, self.model, int8)
            self.quantized_linears = M.count_quantized_linears(self.model)
        self.cases = []
        for c in spec["cases"]:
            inputs = {k: torch.from_numpy(M.load_raw(v)) for k, v in c["inputs"].items()}
            self.cases.append((c, inputs))

    def run(self, index: int, out: str) -> dict:
        c, inp = self.cases[index]
        with torch.inference_mode():
            if self.kind == "encoder":
                fn = lambda: self.model(inp["src"])  # noqa: E731
                t0 = time.perf_counter()
                y = fn()
                r = {"total_s": time.perf_counter() - t0}
                if out:
                    y.numpy().astype(np.float32).tofile(out)
                    r["fused_encoder_layer_op"] = used_fused_encoder(fn)
                return r
            if self.kind == "seq2seq":
                t_enc, total, tokens = M.s2s_greedy(self.model, inp["src_ids"], c["steps"])
                r = {"total_s": total, "prefill_s": t_enc, "decode_s": total - t_enc, "tokens": tokens}
                if out:
                    r["fused_encoder_layer_op"] = used_fused_encoder(
                        lambda: self.model.encode(inp["src_ids"]))
                return r
            if self.kind == "causal_lm":
                pre, dec, tokens, logits = M.gpt2_generate(self.model, inp["input_ids"], c["steps"])
                if out:
                    logits.numpy().astype(np.float32).tofile(out)
                return {"total_s": pre + dec, "prefill_s": pre, "decode_s": dec, "tokens": tokens}
            if self.kind == "bert":
                t0 = time.perf_counter()
                y, _ = self.model(inp["input_ids"], inp["attention_mask"], inp["token_type_ids"])
                r = {"total_s": time.perf_counter() - t0}
                if out:
                    y.numpy().astype(np.float32).tofile(out)
                return r
        raise ValueError(f"unknown kind {self.kind!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--t2", choices=("omp", "blas"), default="omp")
    ap.add_argument("--int8", default="", help="quantize_dynamic on this quantized engine "
                    "(onednn, qnnpack)")
    args = ap.parse_args()
    torch.set_num_threads(1 if (args.threads > 1 and args.t2 == "blas") else args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        with open(args.spec, encoding="utf-8") as f:
            spec = json.load(f)
        t0 = time.perf_counter()
        runner = Runner(spec, args.int8)
        ready = {"ready": True, "load_s": time.perf_counter() - t0, "threads": args.threads,
                 "torch": torch.__version__, "intra_op": torch.get_num_threads(),
                 "blas": loaded_blas()}
        if args.int8:
            ready.update(qengine=torch.backends.quantized.engine,
                         quantized_linears=runner.quantized_linears)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 2
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            reply = runner.run(int(cmd["case"]), cmd.get("out", ""))
        except Exception as e:  # noqa: BLE001
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
