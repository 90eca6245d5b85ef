#!/usr/bin/python3
"""Throughput of tools/batch.py embed with 1 and 2 Dask worker processes (1 thread each) on a
local cluster (issue 17, point 3: 2 workers >= 1.8 x 1 worker).

Each repetition runs `tools/batch.py embed --workers W --threads 1` for W = 1, then 2, over the
same corpus (--texts texts of 2 to 40 words, fixed seed), and reads from its stderr:
  compute  texts ÷ the time from the first task submitted to the last partition written (each
           worker's model load included: once per worker process)
  job      texts ÷ the whole command's wall time (Python start, cluster start, joining the parts)
Prints the CPU and `tessera sysinfo --json`'s measured limits, a row per run, the medians and
the ratios 2 workers ÷ 1. Checks that every run's output is the same bytes.

Model (default): a BERT-shaped random checkpoint written once to --model-dir with
tools/make_hf_checkpoint.py (--layers 4 --hidden 256 --heads 4 --vocab 30522 --positions 512
--seed 0) plus the repository's BERT vocabulary; --model DIR uses another.

Run on a quiet machine (nothing else building or testing):
    /usr/bin/python3 bench/scale/batch_bench.py --reps 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "scale"))
sys.path.insert(0, os.path.join(ROOT, "bench", "scale"))
import batch_test  # noqa: E402  (the corpus maker)
import fault_bench  # noqa: E402  (cpu_name, sysinfo)


def ensure_model(model_dir: str) -> str:
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return model_dir
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_hf_checkpoint.py"), "bert",
                    model_dir, "--layers", "4", "--hidden", "256", "--heads", "4", "--vocab",
                    "30522", "--positions", "512", "--seed", "0"], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(ROOT, "tests", "data", "tokenizers", "bert", "vocab.txt"), model_dir)
    return model_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "tools", "tessera"),
                    help="the tessera binary (sysinfo)")
    ap.add_argument("--python", default=os.path.join(ROOT, "build", "python"),
                    help="folder of the tessera Python module")
    ap.add_argument("--model", help="a bert model directory; default: the random one in "
                    "--model-dir")
    ap.add_argument("--model-dir", default="/tmp/tessera-scale-bench-bert",
                    help="where the default model is written once")
    ap.add_argument("--texts", type=int, default=8000, help="texts in the corpus (8000)")
    ap.add_argument("--partition-size", type=int, default=256, help="texts per task (256)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (3; medians reported)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    model = args.model or ensure_model(args.model_dir)

    info = fault_bench.sysinfo(args.binary)
    print(f"CPU: {fault_bench.cpu_name()}, {info.get('cores', os.cpu_count())} cores, ISA "
          f"{info.get('isa', '?')}")
    if info:
        print(f"measured limits (tessera sysinfo --json): fp32 peak "
              f"{info.get('peak_gflops_per_core', 0):.0f} GFLOP/s per core, DRAM read "
              f"{info.get('bandwidth_gbs_1t', 0):.1f} GB/s (1 thread) / "
              f"{info.get('bandwidth_gbs_all', 0):.1f} GB/s (all)")
    runs, digests = [], set()
    with tempfile.TemporaryDirectory(prefix="tessera-batch-bench-") as work:
        corpus = os.path.join(work, "corpus.jsonl")
        batch_test.make_corpus(corpus, args.texts)
        print(f"model {model}; {args.texts} texts, partitions of {args.partition_size}")
        print(f"{'rep':>3} {'workers':>7} {'compute texts/s':>15} {'job texts/s':>11} "
              f"{'job s':>6}")
        for rep in range(1, args.reps + 1):
            for workers in (1, 2):
                out = os.path.join(work, f"out-{rep}-{workers}.jsonl")
                cmd = [sys.executable, os.path.join(ROOT, "tools", "batch.py"), "embed",
                       "--model", model, "--input", corpus, "--output", out, "--workers",
                       str(workers), "--threads", "1", "--partition-size",
                       str(args.partition_size), "--python", args.python]
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if r.returncode != 0:
                    sys.exit(f"batch.py failed ({r.returncode}):\n{r.stderr[-3000:]}")
                m = re.search(r"computed (\d+) texts in ([\d.]+) s", r.stderr)
                compute = int(m.group(1)) / float(m.group(2))
                with open(out, "rb") as f:
                    digests.add(hashlib.sha256(f.read()).hexdigest())
                os.unlink(out)
                run = {"rep": rep, "workers": workers, "compute_texts_per_s": compute,
                       "job_texts_per_s": args.texts / wall, "job_s": wall}
                runs.append(run)
                print(f"{rep:>3} {workers:>7} {compute:>15.1f} {args.texts / wall:>11.1f} "
                      f"{wall:>6.1f}", flush=True)
    med = {(k, n): statistics.median(r[k] for r in runs if r["workers"] == n)
           for k in ("compute_texts_per_s", "job_texts_per_s") for n in (1, 2)}
    rc = med[("compute_texts_per_s", 2)] / med[("compute_texts_per_s", 1)]
    rj = med[("job_texts_per_s", 2)] / med[("job_texts_per_s", 1)]
    print(f"median compute texts/s: 1 worker {med[('compute_texts_per_s', 1)]:.1f}, 2 workers "
          f"{med[('compute_texts_per_s', 2)]:.1f}; ratio {rc:.2f} (target >= 1.8: "
          f"{'met' if rc >= 1.8 else 'NOT met'})")
    print(f"median job texts/s (cluster start included): 1 worker "
          f"{med[('job_texts_per_s', 1)]:.1f}, 2 workers {med[('job_texts_per_s', 2)]:.1f}; "
          f"ratio {rj:.2f}")
    print(f"outputs identical across all runs: {'yes' if len(digests) == 1 else 'NO'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sysinfo": info, "args": vars(args), "runs": runs,
                       "ratio_compute": rc, "ratio_job": rj}, f, indent=1)
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
