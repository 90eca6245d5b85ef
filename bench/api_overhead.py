#!/usr/bin/python3
"""The per-call cost of the Python module over C++ (not a test; about a minute).

Side by side in one run, at the same thread count, the median of --reps calls after a warm-up:

  Python   the module's call timed from Python (time.perf_counter around it);
  C++      the same call on the same session timed inside C++ (tessera._time_run /
           _time_generate_ids: tessera::Session::run / generate_ids in a loop, GIL released);
           Python and C++ calls alternate one by one, so both see the same machine noise;
  CLI      `tessera bench` in its own process (the engine's forward timed in-process, without
           the API's Session; a reference for the C++ column).

The overhead column, Python - C++, is what the module adds per call (the dict of numpy arrays
to TensorViews, the per-thread session lookup, the GIL released and taken back, the outputs
wrapped as numpy arrays; for generate, the prompts and the result lists).

(a) a BERT-base-shaped `bert` checkpoint (random weights: 12 layers, hidden 768, 12 heads, inner
    3072, vocab 30522, positions 512): one forward of B=1 S=128 (input_ids, attention_mask of
    ones, token_type_ids of zeros, what `tessera bench` feeds it);
(b) a GPT-2-small-shaped `gpt2` checkpoint (12 layers, hidden 768, 12 heads, vocab 50257): a
    one-token forward (`run` of input_ids [1, 1]) and a one-token decode step (`generate` of a
    one-token prompt with max_new_tokens=2: the prefill and one KV-cache step; the CLI column is
    `tessera bench --seq 1 --generate 1`, the same work).

(c) a tiny `bert` (1 layer, hidden 32, vocab 100), B=1 S=8: a call whose engine time is small,
    so the overhead is not lost in the noise of the big ones.

Checkpoints are written once to --workdir (default /tmp/tessera-api-overhead; never the repo).

    PYTHONPATH=build/python /usr/bin/python3 bench/api_overhead.py [--threads 2] [--reps 20]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import tessera  # noqa: E402  (PYTHONPATH=build/python)


def checkpoint(workdir, family, name, args):
    out = os.path.join(workdir, name)
    if not os.path.exists(os.path.join(out, "config.json")):
        print(f"writing {out} ...", flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_hf_checkpoint.py"), family, out]
                       + args, check=True, stdout=subprocess.DEVNULL)
    return out


def interleaved_us(py_call, cpp_call, reps, warmup=2):
    """Medians (microseconds) of py_call timed from Python and of cpp_call's own timing (a list
    of seconds from one call), alternating one by one."""
    for _ in range(warmup):
        py_call()
        cpp_call()
    py, cpp = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        py_call()
        py.append(time.perf_counter() - t0)
        cpp.extend(cpp_call())
    return statistics.median(py) * 1e6, statistics.median(cpp) * 1e6


def cli_bench_us(cli, model, threads, reps, seq, generate=0):
    cmd = [cli, "bench", "--model", model, "--batch", "1", "--seq", str(seq), "--threads", str(threads),
           "--reps", str(reps), "--warmup", "2", "--json"]
    if generate:
        cmd += ["--generate", str(generate)]
    j = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return j["latency_ms"]["median"] * 1e3, j


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_limits(cli):
    """The measured limits above the table: `tessera sysinfo --json` (FP32 peak, DRAM read)."""
    j = json.loads(subprocess.run([cli, "sysinfo", "--json"], capture_output=True, text=True,
                                  check=True).stdout)
    return (f"measured by tessera sysinfo: FP32 peak {j['peak_gflops_per_core']:.1f} GFLOP/s per core "
            f"({j['peak_gflops']:.1f} on {j['cores']}), DRAM read {j['bandwidth_gbs_1t']:.1f} GB/s on 1 "
            f"thread, {j['bandwidth_gbs_all']:.1f} on {j['cores']}; kernels {j['isa']}")


def row(what, py_us, cpp_us, cli_us):
    print(f"{what:34s} {py_us:11.1f} {cpp_us:11.1f} {py_us - cpp_us:+10.1f} {cli_us:11.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/tessera-api-overhead")
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "tools", "tessera"))
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    bert_dir = checkpoint(a.workdir, "bert", "bert-base", [
        "--layers", "12", "--hidden", "768", "--heads", "12", "--inner", "3072", "--vocab", "30522",
        "--positions", "512", "--seed", "0"])
    gpt2_dir = checkpoint(a.workdir, "gpt2", "gpt2-small", [
        "--layers", "12", "--hidden", "768", "--heads", "12", "--vocab", "50257", "--positions", "1024",
        "--seed", "0"])

    tiny_dir = checkpoint(a.workdir, "bert", "bert-tiny", [
        "--layers", "1", "--hidden", "32", "--heads", "2", "--vocab", "100", "--positions", "16",
        "--seed", "0"])

    print(f"tessera {tessera.__version__}; CPU: {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; threads {a.threads}; median of {a.reps} calls after 2 warm-up")
    print(machine_limits(a.cli))
    print(f"{'microseconds per call':34s} {'Python':>11s} {'C++':>11s} {'overhead':>10s} {'CLI bench':>11s}")

    bert = tessera.Model(bert_dir, threads=a.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 30522, (1, 128)).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    py, cpp = interleaved_us(lambda: bert.run(inputs), lambda: tessera._time_run(bert, inputs, 1), a.reps)
    cli, j = cli_bench_us(a.cli, bert_dir, a.threads, a.reps, 128)
    row("(a) bert-base B=1 S=128: run", py, cpp, cli)
    del bert

    gpt2 = tessera.Model(gpt2_dir, threads=a.threads)
    one = {"input_ids": np.array([[464]], np.int64)}
    py, cpp = interleaved_us(lambda: gpt2.run(one), lambda: tessera._time_run(gpt2, one, 1), a.reps)
    cli, _ = cli_bench_us(a.cli, gpt2_dir, a.threads, a.reps, 1)
    row("(b) gpt2-small 1 token: run", py, cpp, cli)
    py, cpp = interleaved_us(lambda: gpt2.generate([[464]], max_new_tokens=2),
                             lambda: tessera._time_generate_ids(gpt2, [[464]], 2, 1), a.reps)
    cli, _ = cli_bench_us(a.cli, gpt2_dir, a.threads, a.reps, 1, generate=1)
    row("(b) gpt2-small decode step: generate", py, cpp, cli)
    del gpt2

    tiny = tessera.Model(tiny_dir, threads=a.threads)
    small = {"input_ids": np.arange(4, 12, dtype=np.int64)[None, :]}
    py, cpp = interleaved_us(lambda: tiny.run(small), lambda: tessera._time_run(tiny, small, 1), 20 * a.reps)
    cli, _ = cli_bench_us(a.cli, tiny_dir, a.threads, 20 * a.reps, 8)
    row("(c) tiny bert B=1 S=8: run", py, cpp, cli)
    print(f"isa {j['isa']}")


if __name__ == "__main__":
    main()
