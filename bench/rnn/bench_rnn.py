#!/usr/bin/python3
"""Greedy decoding of the rnn_attention family: Tessera against PyTorch and ONNX Runtime.

Two random models (exported with tools/export_torch.py): the demo size (GRU, embed 64, hidden
128, 1 encoder layer, attention 64, vocab 60) and a larger one (GRU, embed 256, hidden 512, 2
encoder layers, attention 256, vocab 8000). Workload: sources of --src tokens (32), exactly --new
(32) greedy decode steps (eos not checked, so every run does the same work), batch 1 and 16, 1
and 2 threads.

  Tessera: `tessera bench --model DIR --batch B --seq S --generate N --threads T --json`
           (median of --reps repetitions after a warm-up; encode + N steps).
  PyTorch: RNNAttention.encode, then N calls of RNNAttention.step with the argmax fed back (the
           natural decoder loop of RNNAttention.greedy, nn.GRU under torch.no_grad()), with
           torch.set_num_threads(T); median of --reps; in a process of its own (--torch-worker).
  ORT:     onnxruntime-node (bench/e2e/node_modules: `cd bench/e2e && npm ci --ignore-scripts`)
           running export_onnx.py's encoder.onnx once and step.onnx N times from a node loop
           (ort_rnn.js), intra-op threads T; median of --reps. Its tokens are compared with
           PyTorch's (column ort=torch).

Each engine runs in its own process, one after another, so none is timed beside another's
threads; per row --rounds (3) rounds of the three in turn, each engine's figure the median of its
rounds (load from outside that drifts during the run then falls on all three). Prints the CPU, the machine limits `tessera sysinfo` measures at the start of the run,
then one row per (model, batch, threads). Create /tmp/quiet.lock around it on a shared machine
(see the project's quiet protocol).

    bench/rnn/bench_rnn.py --tessera build/tools/tessera [--reps 20] [--only demo|large]
                           [--threads 1,2] [--no-ort]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_ROOT, "tools"))
sys.path.insert(0, _HERE)
NODE_MODULES = os.path.join(_ROOT, "bench", "e2e", "node_modules")
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"

import torch  # noqa: E402

from export_torch import export_model  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402

MODELS = {
    "demo": dict(cell="gru", embed_dim=64, hidden_size=128, num_encoder_layers=1, attention_dim=64,
                 src_vocab_size=60, tgt_vocab_size=60),
    "large": dict(cell="gru", embed_dim=256, hidden_size=512, num_encoder_layers=2, attention_dim=256,
                  src_vocab_size=8000, tgt_vocab_size=8000),
}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def torch_ms(m: RNNAttention, src: torch.Tensor, steps: int, threads: int, reps: int):
    """Median ms of encode + `steps` greedy steps, and the tokens of the last run [B][steps]."""
    torch.set_num_threads(threads)
    pad = torch.zeros_like(src, dtype=torch.bool)
    tokens = []

    def once():
        tokens.clear()
        with torch.no_grad():
            memory, keys, state, src_pad, final = m.encode(src, pad)
            y = torch.full((src.shape[0],), m.cfg["bos_id"], dtype=torch.long)
            for _ in range(steps):
                logits, _, state = m.step(y, state, memory, keys, src_pad, final)
                y = logits.argmax(dim=-1)
                tokens.append(y)

    once()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, torch.stack(tokens, dim=1).tolist()


def torch_worker(model_dir: str, src_path: str, batch: int, seq: int, steps: int, threads: int,
                 reps: int) -> int:
    """--torch-worker: PyTorch timed in a process of its own (no other engine's threads alive)."""
    from export_onnx import load  # noqa: PLC0415

    m = load(model_dir)
    src = torch.frombuffer(bytearray(open(src_path, "rb").read()), dtype=torch.long).reshape(batch, seq)
    ms, tokens = torch_ms(m, src, steps, threads, reps)
    print(json.dumps({"median_ms": ms, "tokens": tokens, "blas": loaded_blas()}))
    return 0


def loaded_blas() -> str:
    """Which BLAS this process runs its GEMMs on (from /proc/self/maps), as bench/e2e says it."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in os.path.basename(p):
                libs.add(os.path.realpath(p))
    if any("openblas" in p for p in libs):
        return "OpenBLAS " + next((os.path.basename(p)[len("libopenblasp-r"):-3] for p in libs
                                   if "libopenblasp-r" in p), "")
    return "reference BLAS (slow: apt-get install libopenblas0-pthread)" if libs else "no BLAS"


def torch_env(threads: int) -> dict:
    """Debian's torch calls the system libblas.so.3, the netlib reference BLAS unless another is
    chosen (~30x slower GEMMs). As bench/e2e does: OpenBLAS 0.3.21 (pthread) for the PyTorch
    process alone when it is installed, whatever the system's BLAS alternative, with T threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    if os.path.exists(os.path.join(OPENBLAS_DIR, "libblas.so.3")):
        env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + env["LD_LIBRARY_PATH"]
                                                 if env.get("LD_LIBRARY_PATH") else "")
    return env


def run_json(cmd, env=None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ort_ms(onnx_dir: str, src_path: str, batch: int, seq: int, steps: int, threads: int, reps: int):
    env = dict(os.environ, NODE_PATH=NODE_MODULES)
    j = run_json(["node", os.path.join(_HERE, "ort_rnn.js"), onnx_dir, src_path, str(batch),
                  str(seq), str(steps), str(threads), str(reps)], env)
    return j["median_ms"], j["encode_ms"], j["tokens"]


def tessera_ms(tessera: str, d: str, batch: int, seq: int, steps: int, threads: int, reps: int):
    out = subprocess.run([tessera, "bench", "--model", d, "--batch", str(batch), "--seq", str(seq),
                          "--generate", str(steps), "--threads", str(threads), "--reps", str(reps),
                          "--json"], capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return j["latency_ms"]["median"], j.get("prefill_ms", 0.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--src", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--only", choices=list(MODELS))
    ap.add_argument("--threads", default="1,2", help="comma list (default 1,2)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the engines in turn per row; each engine's median of them")
    ap.add_argument("--no-ort", action="store_true", help="leave the ONNX Runtime column out")
    ap.add_argument("--torch-worker", nargs=7, metavar=("DIR", "SRC", "B", "S", "STEPS", "T", "REPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        d, srcp, *nums = args.torch_worker
        return torch_worker(d, srcp, *map(int, nums))
    use_ort = not args.no_ort
    if use_ort and not os.path.isdir(os.path.join(NODE_MODULES, "onnxruntime-node")):
        raise SystemExit(f"{NODE_MODULES}/onnxruntime-node missing: (cd bench/e2e && npm ci "
                         "--ignore-scripts), or pass --no-ort")
    thread_list = [int(t) for t in args.threads.split(",")]
    print(f"CPU: {cpu_name()}")
    si = subprocess.run([args.tessera, "sysinfo"], capture_output=True, text=True).stdout
    print("tessera sysinfo (measured now):\n  " + "\n  ".join(si.strip().splitlines()))
    print(f"torch {torch.__version__}; sources {args.src} tokens, {args.new} greedy steps, median of "
          f"{args.reps} per round, median of {args.rounds} rounds of the engines in turn, each in "
          f"its own process; ms = encode + steps; "
          f"tok/s = batch x steps / ms")
    print(f"{'model':6} {'batch':>5} {'thr':>3} {'tessera ms':>10} {'(encode)':>8} {'torch ms':>9} "
          f"{'ort ms':>9} {'(encode)':>8} {'tessera tok/s':>13} {'vs torch':>8} {'vs ort':>7} "
          f"{'ort=torch':>9}")
    work = tempfile.mkdtemp(prefix="bench_rnn_")
    blas_said = False
    for name, cfg in MODELS.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(0)
        m = RNNAttention(attention="additive", max_length=max(64, args.new), **cfg).eval()
        d = os.path.join(work, name)
        export_model(m, d)
        onnx_dir = os.path.join(work, name + "_onnx")
        if use_ort:
            from export_onnx import export  # noqa: PLC0415

            export(m, onnx_dir)
        for batch in (1, 16):
            g = torch.Generator().manual_seed(1)
            src = torch.randint(4, cfg["src_vocab_size"], (batch, args.src), generator=g)
            src_path = os.path.join(work, f"{name}_src{batch}.i64")
            with open(src_path, "wb") as f:
                f.write(src.numpy().tobytes())
            for threads in thread_list:
                # Rounds of the three engines in turn, so that load from outside drifting
                # during the run falls on all of them; per engine the median of its rounds.
                rounds = {"t": [], "te": [], "p": [], "o": [], "oe": []}
                same = "-"
                for _ in range(args.rounds):
                    t_ms, enc_ms = tessera_ms(args.tessera, d, batch, args.src, args.new, threads,
                                              args.reps)
                    tj = run_json([sys.executable, os.path.abspath(__file__), "--tessera",
                                   args.tessera, "--torch-worker", d, src_path, str(batch),
                                   str(args.src), str(args.new), str(threads), str(args.reps)],
                                  torch_env(threads))
                    rounds["t"].append(t_ms)
                    rounds["te"].append(enc_ms)
                    rounds["p"].append(tj["median_ms"])
                    if not blas_said:
                        print(f"PyTorch's BLAS: {tj['blas']}", flush=True)
                        blas_said = True
                    if use_ort:
                        o_ms, o_enc, o_tok = ort_ms(onnx_dir, src_path, batch, args.src, args.new,
                                                    threads, args.reps)
                        rounds["o"].append(o_ms)
                        rounds["oe"].append(o_enc)
                        same = "yes" if o_tok == tj["tokens"] and same != "NO" else "NO"
                med = {k: statistics.median(v) if v else float("nan") for k, v in rounds.items()}
                t_ms, enc_ms, p_ms, o_ms, o_enc = (med[k] for k in ("t", "te", "p", "o", "oe"))
                tps = batch * args.new / t_ms * 1e3
                print(f"{name:6} {batch:5} {threads:3} {t_ms:10.3f} {enc_ms:8.3f} {p_ms:9.3f} "
                      f"{o_ms:9.3f} {o_enc:8.3f} {tps:13.0f} {p_ms / t_ms:7.2f}x {o_ms / t_ms:6.2f}x "
                      f"{same:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
