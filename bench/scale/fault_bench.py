#!/usr/bin/python3
"""Replicas behind nginx under load, the full form of tests/scale/fault_test.py (issue 17,
point 2): the throughput of 2 replicas against 1, and the fault counts.

Each repetition, for 1 and then 2 replicas of --threads kernel threads each (tools/cluster.sh,
deploy/nginx/tessera.conf; 127.0.0.1, free ports), after a warm-up of 2 x --clients requests:
--clients client threads send --requests completion requests (max_tokens --max-tokens,
temperature 0, every other one streamed). When half of them have been answered:
  1 replica:  nothing happens (the time is noted);
  2 replicas: replica 1 is killed with SIGKILL and restarted (tools/cluster.sh restart 1).
Throughput = generated tokens (usage.completion_tokens, or a stream's token chunks) of the
requests answered up to that half-way time ÷ that time: the load before the kill, both alike.
Prints the CPU and `tessera sysinfo --json`'s measured limits, a row per repetition, the
medians, the ratio 2 replicas ÷ 1 (the issue's target: >= 1.8), and the fault counts of the
2-replica runs (completed, retried, failed-with-error, lost: must be 0; wrong: must be 0).

Model (default): a gpt2-shaped random checkpoint written once to --model-dir with
tools/make_hf_checkpoint.py (--layers 4 --hidden 256 --heads 4 --vocab 50257 --positions 256
--seed 0) plus the repository's GPT-2 tokenizer; --model DIR uses another.

Run on a quiet machine (nothing else building or testing):
    /usr/bin/python3 bench/scale/fault_bench.py --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "scale"))
import fault_test as ft  # noqa: E402

PROMPTS = [
    "The river ran low that autumn, and the boats",
    "In the town the mill kept turning, slower each week",
    "Children walked the dry bed after school",
    "When the rain finally came in November",
    "The miller counted the sacks left in his store",
    "By the end of the month the boats were moving again",
    "The older people said they had not seen the water so far down",
    "as if the whole valley had been waiting",
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sysinfo(binary: str) -> dict:
    r = subprocess.run([binary, "sysinfo", "--json"], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def ensure_model(model_dir: str) -> str:
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return model_dir
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_hf_checkpoint.py"), "gpt2",
                    model_dir, "--layers", "4", "--hidden", "256", "--heads", "4", "--vocab",
                    "50257", "--positions", "256", "--seed", "0"], check=True,
                   stdout=subprocess.DEVNULL)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(ROOT, "tests", "data", "tokenizers", "gpt2", f), model_dir)
    return model_dir


def one_run(args, model: str, replicas: int, work: str) -> dict:
    cluster = ft.Cluster(args.binary, model, replicas=replicas, threads=args.threads,
                         workdir=work)
    with cluster:
        ft.run_load(cluster.port, PROMPTS, None, 2 * args.clients, args.clients,
                    args.max_tokens, args.request_timeout)
        killed = {}

        def fault():
            if replicas < 2:
                return
            os.kill(cluster.replica_pid(1), signal.SIGKILL)
            t = time.perf_counter()
            r = cluster.sh("restart", "1", check=False)
            killed["restart_rc"], killed["restart_s"] = r.returncode, time.perf_counter() - t

        load = ft.run_load(cluster.port, PROMPTS, None, args.requests, args.clients,
                           args.max_tokens, args.request_timeout, on_half=fault)
    half_t = load["fault"]["t"]
    rps, tps = ft.throughput(load, half_t)
    return {"replicas": replicas, "tokens_per_s": tps, "requests_per_s": rps, "half_s": half_t,
            "wall_s": load["wall"], "counts": ft.summarize(load), "killed": killed}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "tools", "tessera"),
                    help="the tessera binary (default build/tools/tessera)")
    ap.add_argument("--model", help="a gpt2 (or any completion) model directory; default: the "
                    "gpt2-shaped random model in --model-dir")
    ap.add_argument("--model-dir", default="/tmp/tessera-scale-bench-gpt2",
                    help="where the default model is written once")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads per replica (1)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    ap.add_argument("--requests", type=int, default=192, help="requests per run (192)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (64)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (3; medians reported)")
    ap.add_argument("--request-timeout", type=float, default=120,
                    help="seconds without an answer after which a request counts as lost")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    model = args.model or ensure_model(args.model_dir)

    info = sysinfo(args.binary)
    print(f"CPU: {cpu_name()}, {info.get('cores', os.cpu_count())} cores, ISA "
          f"{info.get('isa', '?')}")
    if info:
        print(f"measured limits (tessera sysinfo --json): fp32 peak "
              f"{info.get('peak_gflops_per_core', 0):.0f} GFLOP/s per core, DRAM read "
              f"{info.get('bandwidth_gbs_1t', 0):.1f} GB/s (1 thread) / "
              f"{info.get('bandwidth_gbs_all', 0):.1f} GB/s (all), L3 "
              f"{info.get('cache_bytes', {}).get('l3', 0) >> 20} MiB")
    print(f"model {model}; replicas of {args.threads} thread(s); {args.clients} clients; "
          f"{args.requests} requests of max_tokens {args.max_tokens}, every other streamed")
    runs = []
    with tempfile.TemporaryDirectory(prefix="tessera-fault-bench-") as work:
        print(f"{'rep':>3} {'replicas':>8} {'tokens/s':>9} {'req/s':>7} {'half at s':>9} "
              f"{'completed':>9} {'retried':>7} {'failed-err':>10} {'lost':>4} {'wrong':>5}")
        for rep in range(1, args.reps + 1):
            for replicas in (1, 2):
                r = one_run(args, model, replicas, os.path.join(work, f"{rep}-{replicas}"))
                r["rep"] = rep
                runs.append(r)
                c = r["counts"]
                print(f"{rep:>3} {replicas:>8} {r['tokens_per_s']:>9.0f} "
                      f"{r['requests_per_s']:>7.2f} {r['half_s']:>9.2f} {c['completed']:>9} "
                      f"{c['retried']:>7} {c['failed_with_error']:>10} {c['lost']:>4} "
                      f"{c['wrong']:>5}", flush=True)
    med = {n: statistics.median(r["tokens_per_s"] for r in runs if r["replicas"] == n)
           for n in (1, 2)}
    ratio = med[2] / med[1] if med[1] else float("nan")
    print(f"median tokens/s before the kill: 1 replica {med[1]:.0f}, 2 replicas {med[2]:.0f}; "
          f"ratio {ratio:.2f} (target >= 1.8: {'met' if ratio >= 1.8 else 'NOT met'})")
    two = [r["counts"] for r in runs if r["replicas"] == 2]
    tot = {k: sum(c[k] for c in two) for k in ("requests", "completed", "retried",
                                                 "failed_with_error", "lost", "wrong",
                                                 "failed_non_streamed")}
    print(f"2-replica runs with the kill, all reps: {tot['requests']} requests: completed "
          f"{tot['completed']}, retried {tot['retried']}, failed-with-error "
          f"{tot['failed_with_error']}, lost {tot['lost']}, wrong {tot['wrong']}, non-streamed "
          f"not completed {tot['failed_non_streamed']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "sysinfo": info, "args": vars(args), "runs": runs,
                       "median_tokens_per_s": med, "ratio": ratio, "fault_totals": tot}, f,
                      indent=1)
    return 0 if tot["lost"] == 0 and tot["wrong"] == 0 and tot["failed_non_streamed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
